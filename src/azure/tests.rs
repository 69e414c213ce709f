//! Unit tests against local stubs.
