use std::str;

use bytes::{Buf, BufMut, BytesMut};

use crate::error::{PgWireError, PgWireResult};

/// Get null-terminated string, returns None when empty or
/// non null-terminated cstring read.
///
/// Note that this implementation will also advance cursor by 1 after reading
/// empty cstring. This behaviour works for how postgres wire protocol handling
/// key-value pairs, which is ended by a single `\0`
pub(crate) fn get_cstring(buf: &mut BytesMut) -> Option<String> {
    let mut i = 0;

    // with bound check to prevent invalid format
    while i < buf.remaining() && buf[i] != b'\0' {
        i += 1;
    }

    if i == buf.remaining() {
        return None;
    }

    // i+1: include the '\0'
    // move cursor to the end of cstring
    let string_buf = buf.split_to(i + 1);

    if i == 0 {
        None
    } else {
        Some(String::from_utf8_lossy(&string_buf[..i]).into_owned())
    }
}

/// Put null-termianted string
///
/// You can put empty string by giving `""` as input.
pub(crate) fn put_cstring(buf: &mut BytesMut, input: &str) {
    buf.put_slice(input.as_bytes());
    buf.put_u8(b'\0');
}

pub(crate) fn put_option_cstring(buf: &mut BytesMut, input: &Option<String>) {
    if let Some(input) = input {
        put_cstring(buf, input);
    } else {
        buf.put_u8(b'\0');
    }
}

/// Try to read message length from buf, without actually move the cursor
pub(crate) fn get_length(buf: &BytesMut, offset: usize) -> Option<usize> {
    if buf.remaining() >= 4 + offset {
        Some((&buf[offset..4 + offset]).get_i32() as usize)
    } else {
        None
    }
}

/// Validate an on-wire element count before it is used to pre-allocate a
/// collection. Counts are unsigned; `count` elements of `elem_size` bytes each
/// must fit in the remaining buffer, or the message cannot be real.
pub(crate) fn ensure_count(count: usize, elem_size: usize, buf: &BytesMut) -> PgWireResult<()> {
    let remaining = buf.remaining();
    let needed = count.saturating_mul(elem_size);
    if needed > remaining {
        Err(PgWireError::InvalidElementCount(count, needed, remaining))
    } else {
        Ok(())
    }
}

// baocao's patch: checked readers for message bodies. `bytes`' `Buf` getters
// and `split_to` panic (`advance out of bounds`, `split_to out of bounds`) when
// the buffer is shorter than the read, and every body decoder used them on
// client-controlled frames. These return `InvalidMessageFormat` instead.
pub(crate) fn ensure_remaining(buf: &BytesMut, needed: usize) -> PgWireResult<()> {
    let remaining = buf.remaining();
    if needed > remaining {
        Err(PgWireError::InvalidMessageFormat(format!(
            "insufficient data left in message: {needed} bytes required, {remaining} remaining"
        )))
    } else {
        Ok(())
    }
}

pub(crate) fn get_u8(buf: &mut BytesMut) -> PgWireResult<u8> {
    ensure_remaining(buf, 1)?;
    Ok(buf.get_u8())
}

pub(crate) fn get_i8(buf: &mut BytesMut) -> PgWireResult<i8> {
    ensure_remaining(buf, 1)?;
    Ok(buf.get_i8())
}

pub(crate) fn get_i16(buf: &mut BytesMut) -> PgWireResult<i16> {
    ensure_remaining(buf, 2)?;
    Ok(buf.get_i16())
}

pub(crate) fn get_u16(buf: &mut BytesMut) -> PgWireResult<u16> {
    ensure_remaining(buf, 2)?;
    Ok(buf.get_u16())
}

pub(crate) fn get_i32(buf: &mut BytesMut) -> PgWireResult<i32> {
    ensure_remaining(buf, 4)?;
    Ok(buf.get_i32())
}

pub(crate) fn get_u32(buf: &mut BytesMut) -> PgWireResult<u32> {
    ensure_remaining(buf, 4)?;
    Ok(buf.get_u32())
}

/// baocao's patch: checked `split_to`.
pub(crate) fn get_bytes(buf: &mut BytesMut, len: usize) -> PgWireResult<BytesMut> {
    ensure_remaining(buf, len)?;
    Ok(buf.split_to(len))
}

/// baocao's patch: a signed Int32 byte count as sent before a value (Bind
/// parameters, SASLInitialResponse data): -1 means NULL, any other negative is
/// malformed (it used to be cast to a huge `usize` and panic in `split_to`),
/// and a positive count must fit in what is left of the frame.
pub(crate) fn get_nullable_bytes(buf: &mut BytesMut) -> PgWireResult<Option<BytesMut>> {
    let len = get_i32(buf)?;
    match len {
        -1 => Ok(None),
        len if len < 0 => Err(PgWireError::InvalidMessageFormat(format!(
            "invalid value length {len}"
        ))),
        len => get_bytes(buf, len as usize).map(Some),
    }
}

/// Check if message_length matches and move the cursor to right position then
/// call the `decode_fn` for the body
pub(crate) fn decode_packet<T, F>(
    buf: &mut BytesMut,
    offset: usize,
    max_size: usize,
    decode_fn: F,
) -> PgWireResult<Option<T>>
where
    F: Fn(&mut BytesMut, usize) -> PgWireResult<T>,
{
    if let Some(msg_len) = get_length(buf, offset) {
        // baocao's patch: the length counts itself, so anything below 4 is
        // malformed; it used to reach `len - 4` in the body decoders and
        // underflow. (A negative length is read as a huge usize and rejected
        // by the max size check below, before anything is buffered for it.)
        if msg_len < 4 {
            return Err(PgWireError::InvalidMessageFormat(format!(
                "invalid message length {msg_len}"
            )));
        }

        if msg_len > max_size {
            return Err(PgWireError::MessageTooLarge(max_size, msg_len));
        }

        if buf.remaining() >= msg_len + offset {
            buf.advance(offset + 4);
            // baocao's patch: hand the body decoder only this frame's bytes.
            // It used to get the whole read buffer, so a body that lied about
            // its content (a count, an unterminated string) read into the
            // next pipelined message, and `remaining()`-based checks such as
            // `ensure_count` measured the wrong thing. Whatever the decoder
            // leaves unread is dropped with the frame, so the stream stays in
            // sync.
            let mut body = buf.split_to(msg_len - 4);
            return decode_fn(&mut body, msg_len).map(|r| Some(r));
        }
    }

    Ok(None)
}

// pub(crate) fn get_and_ensure_message_type(buf: &mut BytesMut, t: u8) -> PgWireResult<()> {
//     let msg_type = buf[0];
//     // ensure the type is corrent
//     if msg_type != t {
//         return Err(PgWireError::InvalidMessageType(t, msg_type));
//     }

//     Ok(())
// }

pub(crate) fn option_string_len(s: &Option<String>) -> usize {
    1 + s.as_ref().map(|s| s.len()).unwrap_or(0)
}

#[cfg(test)]
mod test {
    use super::get_cstring;
    use bytes::{BufMut, BytesMut};

    #[test]
    fn get_cstring_valid() {
        let mut buf = BytesMut::new();
        buf.put(&b"a cstring\0"[..]);
        buf.put(&b"\0"[..]);

        assert_eq!(Some("a cstring".into()), get_cstring(&mut buf));
        assert_eq!(None, get_cstring(&mut buf));
    }

    #[test]
    fn get_cstring_empty() {
        let mut buf = BytesMut::new();

        assert_eq!(None, get_cstring(&mut buf));
    }

    #[test]
    fn get_cstring_without_null() {
        let mut buf = BytesMut::new();
        buf.put(&b"a cstring"[..]);
        assert_eq!(None, get_cstring(&mut buf));
    }
}
