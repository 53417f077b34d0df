//! bob-btree against a model (`std::collections::BTreeMap`), through reopens and crashes.

mod big;
mod crash;
mod model;
mod sim;
mod trees;
mod wal;
