//! Feeds arbitrary bytes to both directions' frame decoders: they must return, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smidge_protocol::{decode, ClientMessage, ServerMessage, View, ViewUpdate, MAX_FRAME_LEN};

fuzz_target!(|data: &[u8]| {
    let _ = decode::<ClientMessage>(data, MAX_FRAME_LEN);
    if let Ok(Some((ServerMessage::View { update: ViewUpdate::Full(view), .. }, _))) =
        decode::<ServerMessage>(data, MAX_FRAME_LEN)
    {
        let _ = View::validate(&view);
    }
});
