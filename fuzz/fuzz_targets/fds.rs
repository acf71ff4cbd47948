//! Fuzz target `fds`: see `uds_reactor::fuzzing::fds`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| uds_reactor::fuzzing::fds(data));
