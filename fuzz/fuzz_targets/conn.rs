//! Fuzz target `conn`: see `uds_reactor::fuzzing::conn`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| uds_reactor::fuzzing::conn(data));
