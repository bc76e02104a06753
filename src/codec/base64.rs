//! Standard base64 with padding (RFC 4648), through the `base64` crate: how binary data is
//! spelled in every JSON the daemon writes or reads (extended JSON's `$binary`, the
//! connector's formats, `simplified_json` and JSON Schema's `contentEncoding: base64`,
//! Kafka Connect's `bytes`) and in HTTP basic authentication.

use ::base64::engine::general_purpose::STANDARD;
use ::base64::Engine;

/// `bytes` in base64.
pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// `bytes` in base64, appended to `out` (no string in between).
pub fn encode_into(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    let Some(len) = ::base64::encoded_len(bytes.len(), true) else {
        // Only past `usize::MAX / 4 * 3` input bytes: no document is that large.
        return;
    };
    out.resize(start + len, 0);
    let written = STANDARD.encode_slice(bytes, &mut out[start..]).unwrap_or(0);
    out.truncate(start + written);
}

/// The bytes `text` spells in base64.
pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    STANDARD
        .decode(text)
        .map_err(|e| format!("`{text}` is not base64: {e}"))
}
