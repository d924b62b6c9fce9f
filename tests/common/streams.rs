//! Deterministic test streams and their checks: raw frames that tell their
//! number and show any tear or misalignment, and the generator that writes
//! them.

/// A Python generator of raw test frames.
///
/// Arguments: `SIZE RATE COUNT [PIDFILE [HEADER_BYTES [SPLIT]]]`. Writes
/// HEADER_BYTES bytes of [`stream_header`] first (if given), then frames 0, 1,
/// 2, ... of SIZE bytes (see [`raw_frame`]), RATE frames per second (0 = as
/// fast as the pipe takes them), COUNT frames (0 = forever), then exits. With
/// a PIDFILE (not `-`) it first writes its process id there. With SPLIT = 1
/// each frame is written in three uneven pieces, a millisecond apart, so the
/// server's reads do not line up with frames.
pub const RAW_GEN: &str = r#"
import os, struct, sys, time
size = int(sys.argv[1]); rate = float(sys.argv[2]); count = int(sys.argv[3])
pidfile = sys.argv[4] if len(sys.argv) > 4 else '-'
header = int(sys.argv[5]) if len(sys.argv) > 5 else 0
split = len(sys.argv) > 6 and sys.argv[6] == '1'
if pidfile != '-':
    with open(pidfile + '.tmp', 'w') as f:
        f.write(str(os.getpid()))
    os.rename(pidfile + '.tmp', pidfile)
out = sys.stdout.buffer
pattern = bytes((i * 13 + 5) % 251 for i in range(size))
mask = (1 << 64) - 1
if header:
    out.write(bytes((i * 7 + 1) % 256 for i in range(header)))
    out.flush()
n = 0
t0 = time.time()
try:
    while count == 0 or n < count:
        frame = struct.pack('>QQ', n, ~n & mask) + pattern[16:size - 8] + struct.pack('>Q', n)
        if split:
            a = size // 3 + 1
            b = 2 * size // 3 + 5
            for piece in (frame[:a], frame[a:b], frame[b:]):
                out.write(piece)
                out.flush()
                time.sleep(0.001)
        else:
            out.write(frame)
            out.flush()
        n += 1
        if rate > 0:
            d = t0 + n / rate - time.time()
            if d > 0:
                time.sleep(d)
except BrokenPipeError:
    pass
"#;

/// The header bytes [`RAW_GEN`] writes before its frames.
pub fn stream_header(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + 1) % 256) as u8).collect()
}

/// Arguments for `-exec` running [`RAW_GEN`].
pub fn raw_gen_args(
    size: usize,
    rate: u32,
    count: u64,
    pidfile: Option<&str>,
    header: usize,
) -> Vec<String> {
    raw_gen_args_split(size, rate, count, pidfile, header, false)
}

/// [`raw_gen_args`], optionally writing each frame in three pieces.
pub fn raw_gen_args_split(
    size: usize,
    rate: u32,
    count: u64,
    pidfile: Option<&str>,
    header: usize,
    split: bool,
) -> Vec<String> {
    let mut v = vec![
        "python3".to_string(),
        "-c".to_string(),
        RAW_GEN.to_string(),
        size.to_string(),
        rate.to_string(),
        count.to_string(),
        pidfile.unwrap_or("-").to_string(),
    ];
    if header > 0 || split {
        v.push(header.to_string());
    }
    if split {
        v.push("1".to_string());
    }
    v
}

/// Raw test frame `n` of `size` (at least 24) bytes: `n` (u64 big-endian),
/// `!n`, a position-dependent pattern, `n` again. Misaligned, torn or mixed
/// frames fail [`check_raw_frame`].
pub fn raw_frame(n: u64, size: usize) -> Vec<u8> {
    assert!(size >= 24);
    let mut f = raw_pattern(size).into_owned();
    f[..8].copy_from_slice(&n.to_be_bytes());
    f[8..16].copy_from_slice(&(!n).to_be_bytes());
    f[size - 8..].copy_from_slice(&n.to_be_bytes());
    f
}

/// The position-dependent filler of raw test frames, computed once.
fn raw_pattern(len: usize) -> std::borrow::Cow<'static, [u8]> {
    static PATTERN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let p = PATTERN.get_or_init(|| (0..1 << 20).map(|i| ((i * 13 + 5) % 251) as u8).collect());
    if len <= p.len() {
        std::borrow::Cow::Borrowed(&p[..len])
    } else {
        std::borrow::Cow::Owned((0..len).map(|i| ((i * 13 + 5) % 251) as u8).collect())
    }
}

/// Check a raw test frame; return its number.
pub fn check_raw_frame(f: &[u8]) -> Result<u64, String> {
    let size = f.len();
    if size < 24 {
        return Err(format!("frame of {size} bytes"));
    }
    let n = u64::from_be_bytes(f[..8].try_into().unwrap());
    let pattern = raw_pattern(size);
    if f[8..16] != (!n).to_be_bytes()
        || f[16..size - 8] != pattern[16..size - 8]
        || f[size - 8..] != n.to_be_bytes()
    {
        let expected = raw_frame(n, size);
        let at = f
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return Err(format!(
            "frame of {size} bytes claiming number {n} differs from the expected frame at byte {at} (torn or misaligned)"
        ));
    }
    Ok(n)
}

/// Split a body into raw test frames of `size` bytes and check each one.
pub fn raw_frames(body: &[u8], size: usize) -> Result<Vec<u64>, String> {
    if !body.len().is_multiple_of(size) {
        return Err(format!(
            "body of {} bytes is not whole frames of {size}",
            body.len()
        ));
    }
    body.chunks(size)
        .enumerate()
        .map(|(i, f)| check_raw_frame(f).map_err(|e| format!("frame {i} of the body: {e}")))
        .collect()
}

/// Check that frame numbers are consecutive.
pub fn assert_consecutive(nums: &[u64], what: &str) {
    for w in nums.windows(2) {
        assert_eq!(
            w[1],
            w[0] + 1,
            "{what}: frame {} followed by {} in {:?}",
            w[0],
            w[1],
            short(nums)
        );
    }
}

/// A short rendering of a long list of frame numbers.
pub fn short(nums: &[u64]) -> String {
    if nums.len() <= 40 {
        format!("{nums:?}")
    } else {
        format!(
            "{:?} ... {:?} ({} frames)",
            &nums[..20],
            &nums[nums.len() - 20..],
            nums.len()
        )
    }
}
