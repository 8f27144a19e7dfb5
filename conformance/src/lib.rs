//! SMI conformance for smidge: the sample app the cases deploy ([`sample_app`]), the case format
//! ([`case`]), kuttl's assert rule ([`matching`]), the traffic-check step kind ([`traffic`]), the
//! runner ([`run`]) and its report ([`report`]), and the clusters it runs against ([`target`]).

#![forbid(unsafe_code)]

pub mod case;
pub mod matching;
pub mod report;
pub mod run;
pub mod sample_app;
pub mod target;
pub mod traffic;
