//! Every byte string a client can send, decoded as the server decodes it:
//! as a startup packet, then as the messages of a session, frame after
//! frame. Decoding may fail; it must never panic, and it must never hand
//! back more than the input held.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgwire::messages::{DecodeContext, PgWireFrontendMessage, ProtocolVersion};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the connection state; the rest is the stream.
    let Some((&state, stream)) = data.split_first() else {
        return;
    };
    let mut context = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    if state & 1 == 1 {
        // After startup: typed messages.
        context.awaiting_frontend_ssl = false;
        context.awaiting_frontend_startup = false;
    }
    let mut buf = BytesMut::from(stream);
    while !buf.is_empty() {
        let before = buf.len();
        // Only the answer to "is this an SSLRequest?" may consume nothing
        // (the server then reads the same bytes as a startup packet).
        let may_peek = context.awaiting_frontend_ssl;
        match PgWireFrontendMessage::decode(&mut buf, &context) {
            Ok(Some(_)) => assert!(
                buf.len() < before || may_peek,
                "a message decoded from no bytes"
            ),
            // Waiting for more bytes, or a protocol error: either way the
            // connection reads no further here.
            Ok(None) | Err(_) => break,
        }
        context.awaiting_frontend_ssl = false;
        context.awaiting_frontend_startup = false;
    }
});
