//! Integration tests for bob-io-helpers.
