//! Differential checks of the byte-level helpers against obvious references.
//!
//! - `Utf8Validator`: arbitrary bytes fed in arbitrary chunks, then `finish`, agree with
//!   `std::str::from_utf8` on the whole; and each `feed` fails exactly when the bytes so
//!   far contain an invalid sequence (std's `error_len().is_some()`), i.e. the failure
//!   comes with the first bad byte, never earlier and never later. After `finish` or
//!   `reset` the validator is as new.
//! - Masking: `apply_mask` and `apply_mask_words` agree with `apply_mask_bytewise` at
//!   arbitrary offsets; masking piece by piece (each piece at its own offset, as the
//!   decoder does while a payload arrives) equals masking the whole; masking twice is
//!   the identity.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use roomcast_ws::frame::mask::{apply_mask, apply_mask_bytewise, apply_mask_words};
use roomcast_ws::utf8::Utf8Validator;

#[derive(Arbitrary, Debug)]
struct Input {
    key: [u8; 4],
    offset: u32,
    cuts: Vec<u16>,
    bytes: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let Input {
        key,
        offset,
        cuts,
        bytes,
    } = input;
    let mut ends: Vec<usize> = cuts
        .iter()
        .map(|&c| usize::from(c) % (bytes.len() + 1))
        .collect();
    ends.sort_unstable();
    ends.push(bytes.len());

    check_utf8(&bytes, &ends);
    check_mask(&bytes, &ends, key, offset as usize);
});

fn check_utf8(bytes: &[u8], ends: &[usize]) {
    let whole = std::str::from_utf8(bytes);
    let mut v = Utf8Validator::new();
    let mut start = 0;
    let mut ok = true;
    for &end in ends {
        let fed = v.feed(&bytes[start..end]);
        let bad_so_far = std::str::from_utf8(&bytes[..end]).is_err_and(|e| e.error_len().is_some());
        assert_eq!(
            fed.is_err(),
            bad_so_far,
            "feed of {:x?} after {:x?}",
            &bytes[start..end],
            &bytes[..start]
        );
        start = end;
        if fed.is_err() {
            ok = false;
            break;
        }
    }
    if ok {
        ok = v.finish().is_ok();
    } else {
        v.reset();
    }
    assert_eq!(ok, whole.is_ok(), "chunked validation of {bytes:x?} at {ends:?}");

    // Reusable: the whole input in one piece on the same validator.
    let ok = v.feed(bytes).is_ok() && v.finish().is_ok();
    assert_eq!(ok, whole.is_ok(), "reused validator on {bytes:x?}");
}

fn check_mask(bytes: &[u8], ends: &[usize], key: [u8; 4], offset: usize) {
    let mut reference = bytes.to_vec();
    apply_mask_bytewise(&mut reference, key, offset);

    let mut fast = bytes.to_vec();
    apply_mask(&mut fast, key, offset);
    assert_eq!(fast, reference, "apply_mask, offset {offset}, len {}", bytes.len());

    let mut words = bytes.to_vec();
    apply_mask_words(&mut words, key, offset);
    assert_eq!(words, reference, "apply_mask_words, offset {offset}, len {}", bytes.len());

    let mut pieces = bytes.to_vec();
    let mut start = 0;
    for &end in ends {
        apply_mask(&mut pieces[start..end], key, offset + start);
        start = end;
    }
    assert_eq!(pieces, reference, "piecewise at {ends:?}, offset {offset}");

    apply_mask(&mut fast, key, offset);
    assert_eq!(fast, bytes, "masking twice is not the identity");
}
