//! Test harness for Distributary's end-to-end tests and benchmarks: real
//! servers started on free loopback ports and stopped on drop.
//!
//! | module | what |
//! |---|---|
//! | [`moto`] | a moto S3 server, with a fresh bucket per test |

pub mod moto;
