//! bob-btree against a model (`std::collections::BTreeMap`), through reopens and crashes.

mod model;
mod trees;
