//! Integration tests for bob-io-helpers: one binary (house style: link time on 2 cores).

mod batch;
mod os_file;
mod sim;
