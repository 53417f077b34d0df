//! bob-btree against a model (`std::collections::BTreeMap`), through reopens and crashes.

mod big;
mod bulk;
mod checkpoint;
mod compaction;
mod crash;
mod group;
mod model;
mod shared;
mod sim;
mod trees;
mod values;
mod wal;
