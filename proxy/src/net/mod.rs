//! Socket-level pieces shared by both directions: original destination, detection, replay.

pub mod detect;
pub mod orig_dst;
pub mod prefixed;
