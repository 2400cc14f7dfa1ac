//! End-to-end tests of the tributary binary.
