//! A reader that turns any byte stream into valid UTF-8: valid sequences pass through, every byte of an
//! invalid sequence becomes the Latin-1 character of the same value. Written by hand because decoding
//! crates decode a whole stream in one declared encoding, while scraped recipe dumps mix UTF-8 with
//! stray Latin-1 bytes and the JSON parser must see UTF-8.

use std::io::Read;

/// See the module docs. Sequences split across reads are carried over, so the output does not depend
/// on how the input is chunked.
pub struct Utf8RepairReader<R> {
    inner: R,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    eof: bool,
}

impl<R: Read> Utf8RepairReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Utf8RepairReader {
            inner,
            inbuf: Vec::with_capacity(1 << 16),
            out: Vec::with_capacity(1 << 16),
            out_pos: 0,
            eof: false,
        }
    }

    fn fill(&mut self) -> std::io::Result<()> {
        self.out.clear();
        self.out_pos = 0;
        while self.out.is_empty() {
            if !self.eof {
                let old = self.inbuf.len();
                self.inbuf.resize(old + (1 << 16), 0);
                let n = self.inner.read(&mut self.inbuf[old..])?;
                self.inbuf.truncate(old + n);
                self.eof = n == 0;
            }
            if self.inbuf.is_empty() {
                return Ok(());
            }
            let mut rest: &[u8] = &self.inbuf;
            loop {
                match std::str::from_utf8(rest) {
                    Ok(s) => {
                        self.out.extend_from_slice(s.as_bytes());
                        rest = &[];
                        break;
                    }
                    Err(e) => {
                        let (ok, tail) = rest.split_at(e.valid_up_to());
                        self.out.extend_from_slice(ok);
                        match e.error_len() {
                            Some(bad) => {
                                for &b in &tail[..bad] {
                                    let mut tmp = [0u8; 4];
                                    self.out.extend_from_slice(
                                        (b as char).encode_utf8(&mut tmp).as_bytes(),
                                    );
                                }
                                rest = &tail[bad..];
                            }
                            // An incomplete sequence at the end: wait for more input unless there is none.
                            None if !self.eof => {
                                rest = tail;
                                break;
                            }
                            None => {
                                for &b in tail {
                                    let mut tmp = [0u8; 4];
                                    self.out.extend_from_slice(
                                        (b as char).encode_utf8(&mut tmp).as_bytes(),
                                    );
                                }
                                rest = &[];
                                break;
                            }
                        }
                    }
                }
            }
            let keep = rest.len();
            let start = self.inbuf.len() - keep;
            self.inbuf.copy_within(start.., 0);
            self.inbuf.truncate(keep);
            if self.eof && self.out.is_empty() && self.inbuf.is_empty() {
                return Ok(());
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for Utf8RepairReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.out_pos >= self.out.len() {
            self.fill()?;
            if self.out.is_empty() {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.out.len() - self.out_pos);
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads one byte at a time from the source to split every sequence.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }

    #[test]
    fn repairs_mixed_input() {
        let input = "crème "
            .as_bytes()
            .iter()
            .chain(b"br\xfbl\xe9e \xe2\x82")
            .copied()
            .collect::<Vec<u8>>();
        for chunked in [false, true] {
            let mut s = String::new();
            if chunked {
                Utf8RepairReader::new(Trickle(&input))
                    .read_to_string(&mut s)
                    .unwrap();
            } else {
                Utf8RepairReader::new(&input[..])
                    .read_to_string(&mut s)
                    .unwrap();
            }
            assert_eq!(s, "crème brûlée â\u{82}");
        }
    }
}
