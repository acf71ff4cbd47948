//! Fuzz target `platform`: see `uds_reactor::fuzzing::platform`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| uds_reactor::fuzzing::platform(data));
