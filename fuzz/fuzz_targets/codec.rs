//! Fuzz target `codec`: see `uds_reactor::fuzzing::codec`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| uds_reactor::fuzzing::codec(data));
