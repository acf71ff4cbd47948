//! Fuzz target `buffer`: see `uds_reactor::fuzzing::buffer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| uds_reactor::fuzzing::buffer(data));
