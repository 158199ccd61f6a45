//! The request-head guard: a connection wrapper that sits between an accepted TCP stream and
//! actix-http's HTTP/1 parser, so that every request target Go's net/http accepts reaches our
//! routing, and a head too large for actix is answered by our own route instead of actix's
//! empty 400 or 431.
//!
//! actix-http checks the request target with the `http` crate's `Uri` (0.2 in actix-http 3),
//! which rejects bytes that real clients send unencoded and that Go's server (OpenCost's)
//! accepts, e.g. `filter=namespace:"kube-system"`, and it rejects any target over 65,534 bytes.
//! Both end in an empty-body 400 before routing and an ERROR log line per request.
//!
//! [`HeadGuard`] owns the read side of the connection: it follows the HTTP/1.x request stream
//! (keep-alive, pipelining, `Content-Length` bodies), and in each request head it
//!
//! - percent-encodes, in the request target only, the bytes in [`needs_encoding`]; nothing else
//!   in the head is altered, and a stream that does not look like HTTP/1.x passes through as is;
//! - replaces a head whose target or whole size is over its limits (or that has more header
//!   lines than actix-http parses) by a small synthetic request for [`OVERSIZED_PATH`], after
//!   skipping the real head's bytes without buffering them.
//!
//! Writes pass straight through. Memory per connection is bounded (one head at most, plus a
//! fixed read buffer), and the output does not depend on how the input was split into reads.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The path of the synthetic request that replaces an oversized head. Its query is
/// `what=uri` (request target too long) or `what=head` (head too large or too many header
/// lines) and `bytes=N`, the size the client sent as far as it was counted. The app routes it
/// to a 414 or 431 JSON error.
pub const OVERSIZED_PATH: &str = "/__cost-model/oversized";

/// Default limit on a request target, after percent-encoding: safely below the 65,534 bytes
/// the `http` crate accepts.
pub const DEFAULT_MAX_TARGET: usize = 60 * 1024;

/// Default limit on a whole request head (request line, headers, blank line), after
/// percent-encoding: safely below actix-http's 128 KiB read buffer.
pub const DEFAULT_MAX_HEAD: usize = 64 * 1024;

/// Header lines actix-http parses in one head (its decoder's `MAX_HEADERS`); a head with more
/// is answered as too large (`what=head`) rather than with actix's empty 431.
pub const MAX_HEADER_LINES: usize = 96;

/// The longest target the `http` crate accepts; limits above it are lowered to it.
const HTTP_MAX_TARGET: usize = u16::MAX as usize - 1;

/// actix-http gives up on a head that fills its 128 KiB buffer; limits above it are lowered.
const ACTIX_MAX_HEAD: usize = 128 * 1024 - 1;

/// Bytes read from the connection at a time.
const READ_CHUNK: usize = 8 * 1024;

/// Bytes consumed in one `poll_read` without anything to hand on (a head being collected or
/// skipped) before yielding to the executor.
const YIELD_AFTER: usize = 64 * 1024;

/// A head or output buffer grown past this is released once emptied, so that an idle
/// keep-alive connection holds little more than its read buffer.
const KEEP_BUFFER_CAPACITY: usize = 16 * 1024;

/// Whether a request-target byte is percent-encoded (outside the authority of an
/// absolute-form target).
///
/// These are the bytes that Go's server takes as they are (it rejects only control bytes and
/// space, and so does `httparse` before us) but that the `http` crate's URI parser rejects in
/// the path or in the query (`<`, `>`, backtick in the path; `"`, `<`, `>` in the query; every
/// byte >= 0x80 in `http` 0.2, invalid UTF-8 in 1.x), or truncates (`#`: Go keeps it as data of
/// the path or query, `http` cuts a fragment off), plus `{`, `}`, `|`, `^` and `\`, which
/// RFC 3986 does not allow unencoded either and which `http` only tolerates. Percent-decoding
/// (actix's query extractor, its router) gives back the bytes the client sent. `%` itself is
/// never encoded, so an already-encoded target is left as it is.
pub const fn needs_encoding(b: u8) -> bool {
    matches!(
        b,
        b'"' | b'#' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}' | 0x80..=0xFF
    )
}

/// A token byte (RFC 9110), as `httparse` checks a method and a header name.
const fn is_token(b: u8) -> bool {
    matches!(b,
        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+'
        | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

/// A byte `httparse` accepts in a request target.
const fn is_target_byte(b: u8) -> bool {
    matches!(b, 0x21..=0x7E | 0x80..=0xFF)
}

/// Where in the request target a byte is, for deciding whether it may be encoded: only the
/// path and query of an origin-form (`/…`) or absolute-form (`scheme://authority/…`) target
/// are; an authority, `*` or anything else is left as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum TargetPart {
    #[default]
    Start,
    Scheme,
    Colon,
    Slash,
    Authority,
    PathAndQuery,
    Verbatim,
}

impl TargetPart {
    /// Advances over `b` and says whether `b` is to be percent-encoded.
    fn step(&mut self, b: u8) -> bool {
        use TargetPart::*;
        match *self {
            Start => {
                *self = match b {
                    b'/' => PathAndQuery,
                    b if b.is_ascii_alphabetic() => Scheme,
                    _ => Verbatim,
                };
                false
            }
            Scheme => {
                match b {
                    b if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.') => {}
                    b':' => *self = Colon,
                    _ => *self = Verbatim,
                }
                false
            }
            Colon => {
                *self = if b == b'/' { Slash } else { Verbatim };
                false
            }
            Slash => {
                *self = if b == b'/' { Authority } else { Verbatim };
                false
            }
            Authority => {
                if matches!(b, b'/' | b'?') {
                    *self = PathAndQuery;
                }
                false
            }
            PathAndQuery => needs_encoding(b),
            Verbatim => false,
        }
    }
}

/// Appends `target` to `out` with the bytes [`TargetPart::step`] selects percent-encoded.
fn encode_target(target: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut part = TargetPart::Start;
    for &b in target {
        if part.step(b) {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xF)]]);
        } else {
            out.push(b);
        }
    }
}

/// Where the scanner is in a request head.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Part {
    /// Before the request line: empty lines are allowed (RFC 9112 §2.2, as `httparse` does).
    #[default]
    Lead,
    /// After a `\r` before the request line.
    LeadCr,
    Method,
    Target,
    /// In `HTTP/1.x`, at this index.
    Version(u8),
    /// After the `\r` ending the request line.
    VersionCr,
    Headers,
}

/// What one head byte did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    Continue,
    /// Not HTTP/1.x: stop normalising this connection.
    Garbage,
    /// The blank line ending the head.
    HeadEnd,
}

/// The state of the request head being collected.
#[derive(Debug, Default)]
struct Scan {
    part: Part,
    method_start: usize,
    target_start: usize,
    target_end: usize,
    target_part: TargetPart,
    /// Target bytes as sent.
    target_raw: usize,
    /// Target bytes once encoded.
    target_encoded: usize,
    /// Bytes the encoding adds to the head (2 per encoded byte).
    extra: usize,
    line_start: usize,
    header_lines: usize,
    content_length: Option<u64>,
    /// The body's length is not one plain `Content-Length` (chunked, upgraded, duplicate or
    /// malformed framing): after this head the connection passes through unchanged.
    unknown_framing: bool,
}

impl Scan {
    /// Advances over `b`, already appended to `head`.
    fn step(&mut self, b: u8, head: &[u8]) -> Event {
        match self.part {
            Part::Lead => match b {
                b'\n' => {}
                b'\r' => self.part = Part::LeadCr,
                b if is_token(b) => {
                    self.part = Part::Method;
                    self.method_start = head.len() - 1;
                }
                _ => return Event::Garbage,
            },
            Part::LeadCr => match b {
                b'\n' => self.part = Part::Lead,
                _ => return Event::Garbage,
            },
            Part::Method => match b {
                b' ' => {
                    self.part = Part::Target;
                    self.target_start = head.len();
                }
                b if is_token(b) => {}
                _ => return Event::Garbage,
            },
            Part::Target => match b {
                b' ' => {
                    self.part = Part::Version(0);
                    self.target_end = head.len() - 1;
                }
                b if is_target_byte(b) => {
                    self.target_raw += 1;
                    if self.target_part.step(b) {
                        self.target_encoded += 3;
                        self.extra += 2;
                    } else {
                        self.target_encoded += 1;
                    }
                }
                _ => return Event::Garbage,
            },
            Part::Version(i) => {
                const PREFIX: &[u8] = b"HTTP/1.";
                let i = usize::from(i);
                let ok = match i {
                    0..7 => b == PREFIX[i],
                    7 => b.is_ascii_digit(),
                    _ => false,
                };
                if ok {
                    // i < 8 here, so the new index fits a u8.
                    self.part = Part::Version(i as u8 + 1);
                } else if i == 8 && b == b'\r' {
                    self.part = Part::VersionCr;
                } else if i == 8 && b == b'\n' {
                    self.start_headers(head);
                } else {
                    return Event::Garbage;
                }
            }
            Part::VersionCr => match b {
                b'\n' => self.start_headers(head),
                _ => return Event::Garbage,
            },
            Part::Headers => {
                if b == b'\n' {
                    let line = &head[self.line_start..head.len() - 1];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if line.is_empty() {
                        return Event::HeadEnd;
                    }
                    self.header_line(line);
                    self.line_start = head.len();
                }
            }
        }
        Event::Continue
    }

    fn start_headers(&mut self, head: &[u8]) {
        self.part = Part::Headers;
        self.line_start = head.len();
    }

    /// Notes what a header line says about the body's framing.
    fn header_line(&mut self, line: &[u8]) {
        self.header_lines += 1;
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            self.unknown_framing = true;
            return;
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&c| is_token(c)) {
            // obs-fold, spaces before the colon and the like: actix rejects these heads, and
            // nothing after them is worth normalising.
            self.unknown_framing = true;
            return;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let value = line[colon + 1..].trim_ascii();
            match (parse_length(value), self.content_length) {
                (Some(n), None) => self.content_length = Some(n),
                _ => self.unknown_framing = true,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            self.unknown_framing = true;
        }
    }

    /// Whether the current line of the head has anything but `\r` in it so far.
    fn line_has_content(&self, head: &[u8]) -> bool {
        match self.part {
            Part::Lead | Part::LeadCr => false,
            Part::Method | Part::Target | Part::Version(_) | Part::VersionCr => true,
            Part::Headers => head[self.line_start..].iter().any(|&c| c != b'\r'),
        }
    }
}

/// A `Content-Length` value: decimal digits only (actix rejects a sign, as it should).
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &c| {
        if c.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(c - b'0'))
        } else {
            None
        }
    })
}

/// Which limit a head broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum What {
    Uri,
    Head,
}

/// An oversized head being skipped up to its blank line, its bytes only counted.
#[derive(Debug)]
struct Discard {
    what: What,
    target_bytes: u64,
    head_bytes: u64,
    in_target: bool,
    seen_request_line: bool,
    line_has_content: bool,
}

impl Discard {
    fn new(what: What, scan: &Scan, head: &[u8]) -> Self {
        Discard {
            what,
            target_bytes: scan.target_raw as u64,
            head_bytes: head.len() as u64,
            in_target: scan.part == Part::Target,
            seen_request_line: scan.part == Part::Headers,
            line_has_content: scan.line_has_content(head),
        }
    }

    /// Skips bytes of `input`; returns how many, and whether the head's blank line was among
    /// them (it is the last byte counted then).
    fn skip(&mut self, input: &[u8]) -> (usize, bool) {
        for (i, &b) in input.iter().enumerate() {
            self.head_bytes = self.head_bytes.saturating_add(1);
            if self.in_target {
                if matches!(b, b' ' | b'\r' | b'\n') {
                    self.in_target = false;
                } else {
                    self.target_bytes = self.target_bytes.saturating_add(1);
                }
            }
            if b == b'\n' {
                if self.line_has_content {
                    self.seen_request_line = true;
                } else if self.seen_request_line {
                    return (i + 1, true);
                }
                self.line_has_content = false;
            } else if b != b'\r' {
                self.line_has_content = true;
            }
        }
        (input.len(), false)
    }

    /// Appends the synthetic head that replaces the skipped one.
    fn synthetic_head(&self, out: &mut Vec<u8>) {
        let (what, bytes) = match self.what {
            What::Uri => ("uri", self.target_bytes),
            What::Head => ("head", self.head_bytes),
        };
        out.extend_from_slice(
            format!(
                "GET {OVERSIZED_PATH}?what={what}&bytes={bytes} HTTP/1.1\r\n\
                 Host: localhost\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
    }
}

/// What the next input bytes are.
#[derive(Debug)]
enum Mode {
    /// A request head, collected in `Normalizer::head`.
    Head,
    /// This many body bytes, passed on untouched.
    Body(u64),
    /// An oversized head, skipped.
    Discard(Discard),
    /// Everything after a synthetic head: read and dropped.
    Drain,
    /// Everything, passed on untouched (not HTTP/1.x, or framing not followed).
    Passthrough,
}

/// The byte-stream rewriter, free of I/O: fed the bytes read from the client in any split, it
/// appends the same output for the server.
#[derive(Debug)]
struct Normalizer {
    max_target: usize,
    max_head: usize,
    mode: Mode,
    /// The raw bytes of the head being collected (at most `max_head`).
    head: Vec<u8>,
    scan: Scan,
}

impl Normalizer {
    fn new(max_target: usize, max_head: usize) -> Self {
        Normalizer {
            max_target: max_target.min(HTTP_MAX_TARGET),
            max_head: max_head.min(ACTIX_MAX_HEAD),
            mode: Mode::Head,
            head: Vec::new(),
            scan: Scan::default(),
        }
    }

    fn is_passthrough(&self) -> bool {
        matches!(self.mode, Mode::Passthrough)
    }

    /// Consumes all of `input`, appending to `out` what is to be handed on.
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while let Some(&b) = input.first() {
            match &mut self.mode {
                Mode::Passthrough => {
                    out.extend_from_slice(input);
                    return;
                }
                Mode::Drain => return,
                Mode::Body(left) => {
                    let n = usize::try_from(*left).map_or(input.len(), |l| l.min(input.len()));
                    out.extend_from_slice(&input[..n]);
                    *left -= n as u64;
                    if *left == 0 {
                        self.mode = Mode::Head;
                    }
                    input = &input[n..];
                }
                Mode::Discard(discard) => {
                    let (n, done) = discard.skip(input);
                    if done {
                        discard.synthetic_head(out);
                        self.mode = Mode::Drain;
                    }
                    input = &input[n..];
                }
                Mode::Head => {
                    if self.head_byte(b, out) {
                        input = &input[1..];
                    }
                }
            }
        }
    }

    /// The client closed its side: hands on what is left.
    fn finish(&mut self, out: &mut Vec<u8>) {
        match &self.mode {
            // An unfinished head goes on as it came; actix drops it as it does today.
            Mode::Head => {
                out.extend_from_slice(&self.head);
                self.reset_head();
                self.mode = Mode::Passthrough;
            }
            // The client sent an oversized head and stopped: it still gets its answer.
            Mode::Discard(discard) => {
                discard.synthetic_head(out);
                self.mode = Mode::Drain;
            }
            Mode::Body(_) | Mode::Drain | Mode::Passthrough => {}
        }
    }

    /// Takes one byte of a head. Returns false when the byte was not consumed (the head just
    /// turned out oversized; the byte is for the skipping that follows).
    fn head_byte(&mut self, b: u8, out: &mut Vec<u8>) -> bool {
        if self.head.len() >= self.max_head {
            self.mode = Mode::Discard(Discard::new(What::Head, &self.scan, &self.head));
            self.reset_head();
            return false;
        }
        if self.head.len() == self.head.capacity() {
            // Grow by doubling, but never past the limit.
            let want = (self.head.capacity() * 2).max(256).min(self.max_head);
            self.head.reserve_exact(want - self.head.len());
        }
        self.head.push(b);
        let event = self.scan.step(b, &self.head);
        if event == Event::Garbage {
            out.extend_from_slice(&self.head);
            self.reset_head();
            self.mode = Mode::Passthrough;
            return true;
        }
        let over = if self.scan.target_encoded > self.max_target {
            Some(What::Uri)
        } else if self.head.len() + self.scan.extra > self.max_head
            || self.scan.header_lines > MAX_HEADER_LINES
        {
            Some(What::Head)
        } else {
            None
        };
        if let Some(what) = over {
            let discard = Discard::new(what, &self.scan, &self.head);
            self.reset_head();
            if event == Event::HeadEnd {
                discard.synthetic_head(out);
                self.mode = Mode::Drain;
            } else {
                self.mode = Mode::Discard(discard);
            }
        } else if event == Event::HeadEnd {
            self.hand_on_head(out);
        }
        true
    }

    /// Hands on a complete head with its target encoded, and sets up for what follows it.
    fn hand_on_head(&mut self, out: &mut Vec<u8>) {
        let scan = &self.scan;
        let head = &self.head;
        out.extend_from_slice(&head[..scan.target_start]);
        encode_target(&head[scan.target_start..scan.target_end], out);
        out.extend_from_slice(&head[scan.target_end..]);
        let method = &head[scan.method_start..scan.target_start - 1];
        self.mode = if scan.unknown_framing || method == b"CONNECT" {
            Mode::Passthrough
        } else {
            match scan.content_length {
                Some(n) if n > 0 => Mode::Body(n),
                _ => Mode::Head,
            }
        };
        self.reset_head();
    }

    fn reset_head(&mut self) {
        self.head.clear();
        if self.head.capacity() > KEEP_BUFFER_CAPACITY {
            self.head = Vec::new();
        }
        self.scan = Scan::default();
    }
}

/// A connection wrapper that normalises HTTP/1.x request heads on their way to actix-http (see
/// the module documentation). Writes pass straight through.
#[derive(Debug)]
pub struct HeadGuard<T> {
    inner: T,
    normalizer: Normalizer,
    /// Bytes read from `inner`, fed to the normalizer at once.
    scratch: Box<[u8]>,
    /// Bytes ready for the reader, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
    /// `inner` reached end of file.
    eof: bool,
}

impl<T> HeadGuard<T> {
    /// Wraps a connection with the default limits ([`DEFAULT_MAX_TARGET`],
    /// [`DEFAULT_MAX_HEAD`]).
    pub fn new(inner: T) -> Self {
        Self::with_limits(inner, DEFAULT_MAX_TARGET, DEFAULT_MAX_HEAD)
    }

    /// Wraps a connection with these limits on the encoded request target and the encoded
    /// head, in bytes. They are lowered to what the `http` crate (65,534) and actix-http
    /// (just under 128 KiB) can take.
    pub fn with_limits(inner: T, max_target: usize, max_head: usize) -> Self {
        HeadGuard {
            inner,
            normalizer: Normalizer::new(max_target, max_head),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            out: Vec::new(),
            out_pos: 0,
            eof: false,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadGuard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let mut budget = YIELD_AFTER;
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                    if this.out.capacity() > KEEP_BUFFER_CAPACITY {
                        this.out = Vec::new();
                    }
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.normalizer.is_passthrough() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = ReadBuf::new(&mut this.scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut chunk) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Ready(Ok(())) => {}
            }
            let n = chunk.filled().len();
            if n == 0 {
                this.eof = true;
                this.normalizer.finish(&mut this.out);
                continue;
            }
            this.normalizer.feed(&this.scratch[..n], &mut this.out);
            if this.out.is_empty() {
                budget = budget.saturating_sub(n);
                if budget == 0 {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeadGuard<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An in-memory connection that returns one chunk per read, then end of file.
    struct Chunks(VecDeque<Vec<u8>>);

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some(mut chunk) = self.0.pop_front() {
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                if n < chunk.len() {
                    self.0.push_front(chunk.split_off(n));
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    /// Everything `chunks` yields through a guard, read with a small buffer.
    async fn through_guard(chunks: Vec<Vec<u8>>) -> Vec<u8> {
        through_guard_with(chunks, 1000, HeadGuard::new).await
    }

    async fn through_guard_with(
        chunks: Vec<Vec<u8>>,
        read_size: usize,
        guard: impl FnOnce(Chunks) -> HeadGuard<Chunks>,
    ) -> Vec<u8> {
        let mut guard = guard(Chunks(chunks.into()));
        let mut out = Vec::new();
        let mut buf = vec![0u8; read_size];
        loop {
            let n = guard.read(&mut buf).await.expect("in-memory read");
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// `input` through a normalizer with the default limits, in one piece, then EOF.
    fn normalize(input: &[u8]) -> Vec<u8> {
        normalize_with(input, DEFAULT_MAX_TARGET, DEFAULT_MAX_HEAD)
    }

    fn normalize_with(input: &[u8], max_target: usize, max_head: usize) -> Vec<u8> {
        let mut n = Normalizer::new(max_target, max_head);
        let mut out = Vec::new();
        n.feed(input, &mut out);
        n.finish(&mut out);
        out
    }

    fn synthetic(what: &str, bytes: usize) -> Vec<u8> {
        format!(
            "GET {OVERSIZED_PATH}?what={what}&bytes={bytes} HTTP/1.1\r\n\
             Host: localhost\r\nConnection: close\r\n\r\n"
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn raw_quotes_are_encoded() {
        let input =
            b"GET /model/allocation?window=1d&filter=namespace:\"kube-system\" HTTP/1.1\r\n\
                      Host: h\r\n\r\n";
        let out = through_guard(vec![input.to_vec()]).await;
        assert_eq!(
            out,
            b"GET /model/allocation?window=1d&filter=namespace:%22kube-system%22 HTTP/1.1\r\n\
              Host: h\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn every_listed_byte_is_encoded_and_percent_is_kept() {
        let mut input = b"GET /a`b?q=\"<>{}|^`\\#%22%zz".to_vec();
        input.extend_from_slice("é".as_bytes());
        input.extend_from_slice(b" HTTP/1.1\r\nHost: h\r\nX-Q: \"<>\"\r\n\r\n");
        let out = through_guard(vec![input]).await;
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            "GET /a%60b?q=%22%3C%3E%7B%7D%7C%5E%60%5C%23%22%zz%C3%A9 HTTP/1.1\r\n\
             Host: h\r\nX-Q: \"<>\"\r\n\r\n"
        );
    }

    #[test]
    fn already_encoded_target_is_untouched() {
        let input = b"GET /x?filter=namespace:%22kube-system%22 HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(normalize(input), input);
    }

    #[test]
    fn absolute_form_keeps_its_authority() {
        let input = b"GET http://h:9003/a?f=\"x\" HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(
            normalize(input),
            b"GET http://h:9003/a?f=%22x%22 HTTP/1.1\r\nHost: h\r\n\r\n"
        );
        let star = b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(normalize(star), star);
    }

    #[tokio::test]
    async fn pipelined_requests_in_one_read() {
        let input = b"GET /a?f=\"1\" HTTP/1.1\r\nHost: h\r\n\r\n\
                      GET /b?f=\"2\" HTTP/1.1\r\nHost: h\r\n\r\n";
        let out = through_guard(vec![input.to_vec()]).await;
        assert_eq!(
            out,
            b"GET /a?f=%221%22 HTTP/1.1\r\nHost: h\r\n\r\n\
              GET /b?f=%222%22 HTTP/1.1\r\nHost: h\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn head_split_one_byte_per_read() {
        let input = b"\r\nGET /a?f=\"1\" HTTP/1.1\r\nHost: h\r\n\r\n";
        let out = through_guard(input.iter().map(|&b| vec![b]).collect()).await;
        assert_eq!(out, b"\r\nGET /a?f=%221%22 HTTP/1.1\r\nHost: h\r\n\r\n");
    }

    #[tokio::test]
    async fn body_with_a_request_line_is_not_rewritten() {
        let body = b"GET /x?q=\"y\" HTTP/1.1\r\n\r\n";
        let mut input = format!(
            "POST /p HTTP/1.1\r\nHost: h\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        input.extend_from_slice(body);
        let mut expected = input.clone();
        input.extend_from_slice(b"GET /q?f=\"z\" HTTP/1.1\r\nHost: h\r\n\r\n");
        expected.extend_from_slice(b"GET /q?f=%22z%22 HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(through_guard(vec![input]).await, expected);
    }

    #[test]
    fn chunked_bodies_pass_through_for_the_rest_of_the_connection() {
        let input = b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
                      3\r\n\"a\"\r\n0\r\n\r\nGET /q?f=\"z\" HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(normalize(input), input);
    }

    #[test]
    fn odd_content_length_stops_normalising() {
        for cl in ["+5", "5, 5", "x", ""] {
            let input = format!(
                "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: {cl}\r\n\r\nGET /\" HTTP/1.1\r\n\r\n"
            );
            assert_eq!(normalize(input.as_bytes()), input.as_bytes(), "{cl:?}");
        }
        let twice = b"POST /p HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n\
                      xGET /\" HTTP/1.1\r\n\r\n";
        assert_eq!(normalize(twice), twice);
    }

    #[tokio::test]
    async fn oversized_target_becomes_the_synthetic_request() {
        let target = format!("/echo?filter={}", "a".repeat(70_000));
        let input = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\nGET /next HTTP/1.1\r\n\r\n");
        let chunks = input.as_bytes().chunks(777).map(<[u8]>::to_vec).collect();
        let out = through_guard(chunks).await;
        assert_eq!(out, synthetic("uri", target.len()));
    }

    #[test]
    fn target_limit_counts_encoded_bytes() {
        // 25,000 quotes are 75,000 bytes once encoded.
        let input = format!("GET /?q={} HTTP/1.1\r\n\r\n", "\"".repeat(25_000));
        assert_eq!(
            normalize(input.as_bytes()),
            synthetic("uri", "/?q=".len() + 25_000)
        );
        let fits = format!("GET /?q={} HTTP/1.1\r\n\r\n", "\"".repeat(20_000));
        assert_eq!(
            normalize(fits.as_bytes()),
            format!("GET /?q={} HTTP/1.1\r\n\r\n", "%22".repeat(20_000)).into_bytes()
        );
    }

    #[tokio::test]
    async fn oversized_head_becomes_the_synthetic_request() {
        let head = format!(
            "GET /echo HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n",
            "b".repeat(100 * 1024)
        );
        let mut input = head.clone().into_bytes();
        input.extend_from_slice(b"after the head: not read");
        let chunks = input.chunks(4096).map(<[u8]>::to_vec).collect();
        let out = through_guard(chunks).await;
        assert_eq!(out, synthetic("head", head.len()));
    }

    #[test]
    fn too_many_header_lines_is_an_oversized_head() {
        let mut head = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADER_LINES {
            head.push_str(&format!("X-{i}: v\r\n"));
        }
        head.push_str("\r\n");
        assert_eq!(normalize(head.as_bytes()), synthetic("head", head.len()));
        let fits = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "B: 2\r\n".repeat(MAX_HEADER_LINES)
        );
        assert_eq!(normalize(fits.as_bytes()), fits.as_bytes());
    }

    #[test]
    fn oversized_head_cut_short_still_gets_its_answer() {
        let input = format!("GET /?q={}", "a".repeat(70_000));
        assert_eq!(
            normalize(input.as_bytes()),
            synthetic("uri", "/?q=".len() + 70_000)
        );
    }

    #[tokio::test]
    async fn garbage_passes_through() {
        for input in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http"[..],
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET /a\x01\"b HTTP/1.1\r\n\r\n",
            b"GET /a\"b HTTP/2\r\n\r\n",
            b"GET /a\"b  HTTP/1.1\r\n\r\n",
        ] {
            let out = through_guard(vec![input.to_vec()]).await;
            assert_eq!(out, input, "{:?}", String::from_utf8_lossy(input));
        }
        // Garbage after a good head stops normalising from there on only.
        let input = b"GET /\" HTTP/1.1\r\nHost: h\r\n\r\n\x00GET /\" HTTP/1.1\r\n\r\n";
        assert_eq!(
            through_guard(vec![input.to_vec()]).await,
            b"GET /%22 HTTP/1.1\r\nHost: h\r\n\r\n\x00GET /\" HTTP/1.1\r\n\r\n"
        );
    }

    #[test]
    fn unfinished_head_goes_on_as_it_came() {
        let input = b"GET /a?f=\"1\" HTTP/1.1\r\nHost:";
        assert_eq!(normalize(input), input);
    }

    #[tokio::test]
    async fn expect_continue_does_not_wait_for_the_body() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut guard = HeadGuard::new(server);
        let head = b"POST /p?f=\"x\" HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\
                     Content-Length: 5\r\n\r\n";
        client.write_all(head).await.expect("duplex write");
        let mut got = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), guard.read(&mut got))
            .await
            .expect("the head is handed on before the body arrives")
            .expect("duplex read");
        assert_eq!(
            &got[..n],
            b"POST /p?f=%22x%22 HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\
              Content-Length: 5\r\n\r\n"
        );
        guard
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .expect("duplex write");
        let mut cont = [0u8; 25];
        client.read_exact(&mut cont).await.expect("duplex read");
        assert_eq!(&cont, b"HTTP/1.1 100 Continue\r\n\r\n");
        client.write_all(b"a\"b<c").await.expect("duplex write");
        let n = guard.read(&mut got).await.expect("duplex read");
        assert_eq!(&got[..n], b"a\"b<c");
    }

    /// xorshift64*: a small deterministic generator for the split and fuzz tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Feeds `input` split at random points, checking the memory bound on the way.
    fn normalize_split(input: &[u8], rng: &mut Rng, max_chunk: usize) -> Vec<u8> {
        let mut n = Normalizer::new(300, 1000);
        let mut out = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let k = (1 + rng.below(max_chunk)).min(rest.len());
            let before = out.len();
            n.feed(&rest[..k], &mut out);
            assert!(n.head.capacity() <= 1000, "head buffer over its limit");
            assert!(
                out.len() - before <= 1000 + 3 * k,
                "output not bounded by its input"
            );
            rest = &rest[k..];
        }
        n.finish(&mut out);
        out
    }

    /// A random byte stream made mostly of HTTP pieces, so that the parser gets deep.
    fn random_stream(rng: &mut Rng) -> Vec<u8> {
        const PIECES: &[&[u8]] = &[
            b"GET ",
            b"POST ",
            b"/",
            b"/a?f=",
            b"\"",
            b"<>",
            b"%22",
            b"\xc3\xa9",
            b"#",
            b" HTTP/1.1\r\n",
            b" HTTP/1.0\n",
            b"Host: h\r\n",
            b"Content-Length: 3\r\n",
            b"Content-Length: 0\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"Expect: 100-continue\r\n",
            b"\r\n",
            b"\n",
            b"\r",
            b" ",
            b"abc",
            b"http://h:1",
            b"*",
            b"\x00",
            b"\x7f",
            b":",
            b"Upgrade: websocket\r\n",
            b"CONNECT ",
        ];
        let mut s = Vec::new();
        for _ in 0..rng.below(60) {
            if rng.below(10) == 0 {
                let len = rng.below(400);
                let byte = rng.next() as u8;
                s.extend(std::iter::repeat_n(
                    if rng.below(2) == 0 { b'a' } else { byte },
                    len,
                ));
            } else {
                s.extend_from_slice(PIECES[rng.below(PIECES.len())]);
            }
        }
        s
    }

    #[test]
    fn output_does_not_depend_on_read_boundaries() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut seen_synthetic = false;
        for _ in 0..3000 {
            let input = random_stream(&mut rng);
            let whole = normalize_with(&input, 300, 1000);
            seen_synthetic |= whole
                .windows(OVERSIZED_PATH.len())
                .any(|w| w == OVERSIZED_PATH.as_bytes());
            for max_chunk in [1, 2, 7, 64] {
                assert_eq!(
                    normalize_split(&input, &mut rng, max_chunk),
                    whole,
                    "input {:?}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
        assert!(seen_synthetic, "the fuzz input never reached the limits");
    }

    #[tokio::test]
    async fn guard_output_does_not_depend_on_read_boundaries() {
        let mut rng = Rng(7);
        for _ in 0..500 {
            let input = random_stream(&mut rng);
            let whole = normalize_with(&input, 300, 1000);
            let mut chunks = Vec::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let k = (1 + rng.below(40)).min(rest.len());
                chunks.push(rest[..k].to_vec());
                rest = &rest[k..];
            }
            let read_size = 1 + rng.below(50);
            let out =
                through_guard_with(chunks, read_size, |c| HeadGuard::with_limits(c, 300, 1000))
                    .await;
            assert_eq!(out, whole, "input {:?}", String::from_utf8_lossy(&input));
        }
    }

    #[test]
    fn random_bytes_never_panic_and_split_the_same() {
        let mut rng = Rng(42);
        for _ in 0..2000 {
            let len = rng.below(3000);
            let input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let mut prefixed = b"GET /".to_vec();
            prefixed.extend_from_slice(&input);
            for stream in [&input, &prefixed] {
                let whole = normalize_with(stream, 300, 1000);
                assert_eq!(normalize_split(stream, &mut rng, 5), whole);
                normalize(stream);
            }
        }
    }
}
