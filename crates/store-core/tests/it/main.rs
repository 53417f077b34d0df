//! Integration tests for bob-store-core.
