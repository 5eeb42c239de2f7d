//! pgrouter's own simple queries on an idle, logged-in server connection: the pool's reset query
//! and the proxy's catalog look-ups. One exchange: `Query`, then everything through the next
//! `ReadyForQuery`.

use crate::ServerConn;
use bytes::{Bytes, BytesMut};
use pgrouter_protocol::backend::{self as be, TransactionStatus};
use pgrouter_protocol::error::ErrorFields;
use pgrouter_protocol::frame::{self, HEADER_LEN};
use tokio::io::AsyncReadExt;

/// Largest message accepted in answer to pgrouter's own query (a catalog row, an error).
const MAX_MESSAGE: usize = 64 << 20;

/// What one simple-query exchange returned.
#[derive(Debug)]
pub struct QueryOutcome {
    /// The data rows, as text (`None` for NULL).
    pub rows: Vec<Vec<Option<String>>>,
    /// The server answered with an `ErrorResponse`.
    pub failed: bool,
    /// That error as "SQLSTATE: message", for logs and operators.
    pub error: Option<String>,
    /// The transaction status of the closing `ReadyForQuery`.
    pub status: TransactionStatus,
    /// Whole messages meant for the session's client that arrived meanwhile: notifications,
    /// notices, parameter changes. In order.
    pub asynchronous: Vec<Bytes>,
}

impl ServerConn {
    /// Runs `sql` as a simple query on this idle connection and reads through its
    /// `ReadyForQuery`. `buf` holds bytes already read from the connection; what follows the
    /// `ReadyForQuery` stays in it. Unbounded in time: callers wrap it in a timeout where a
    /// server could stall.
    pub async fn simple_query(
        &mut self,
        buf: &mut BytesMut,
        sql: &str,
    ) -> std::io::Result<QueryOutcome> {
        let mut out = BytesMut::with_capacity(sql.len() + 8);
        pgrouter_protocol::frontend::write_query(&mut out, sql);
        self.stream.write_all(&out).await?;
        self.read_through_ready(buf).await
    }

    /// Runs `sql` with text parameters `$1`, `$2`, … through the extended protocol (the values
    /// never become SQL text) on this idle connection, and reads through its `ReadyForQuery`.
    /// Unbounded in time, as [`ServerConn::simple_query`].
    pub async fn query_with_params(
        &mut self,
        buf: &mut BytesMut,
        sql: &str,
        params: &[&str],
    ) -> std::io::Result<QueryOutcome> {
        use bytes::BufMut;
        let invalid =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_owned());
        if sql.contains('\0') || params.iter().any(|p| p.contains('\0')) {
            return Err(invalid("a NUL byte in a query or parameter"));
        }
        if params.iter().any(|p| i32::try_from(p.len()).is_err()) {
            return Err(invalid("a parameter over 2 GB"));
        }
        let count = i16::try_from(params.len()).map_err(|_| invalid("too many parameters"))?;
        let mut out = BytesMut::with_capacity(sql.len() + 64);
        let mut message = |tag: u8, body: &dyn Fn(&mut BytesMut)| -> std::io::Result<()> {
            let start = out.len();
            out.put_u8(tag);
            out.put_i32(0);
            body(&mut out);
            let len =
                i32::try_from(out.len() - start - 1).map_err(|_| invalid("query too long"))?;
            out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
            Ok(())
        };
        // Parse: unnamed statement, parameter types left to the server.
        message(b'P', &|o| {
            o.put_u8(0);
            o.put_slice(sql.as_bytes());
            o.put_u8(0);
            o.put_i16(0);
        })?;
        // Bind: unnamed portal, all parameters and results as text.
        message(b'B', &|o| {
            o.put_u8(0);
            o.put_u8(0);
            o.put_i16(0);
            o.put_i16(count);
            for p in params {
                o.put_i32(i32::try_from(p.len()).unwrap_or(i32::MAX));
                o.put_slice(p.as_bytes());
            }
            o.put_i16(0);
        })?;
        // Execute all rows, then Sync.
        message(b'E', &|o| {
            o.put_u8(0);
            o.put_i32(0);
        })?;
        message(b'S', &|_| {})?;
        self.stream.write_all(&out).await?;
        self.read_through_ready(buf).await
    }

    /// Reads one exchange's answers through its `ReadyForQuery`.
    async fn read_through_ready(&mut self, buf: &mut BytesMut) -> std::io::Result<QueryOutcome> {
        let mut outcome = QueryOutcome {
            rows: Vec::new(),
            failed: false,
            error: None,
            status: TransactionStatus::Idle,
            asynchronous: Vec::new(),
        };
        loop {
            while let Some(f) = frame::next_frame(buf, MAX_MESSAGE).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e:?}"))
            })? {
                let msg = buf.split_to(f.total_len).freeze();
                let body = &msg[HEADER_LEN..];
                match f.tag {
                    be::DATA_ROW => outcome.rows.push(be::parse_data_row_text(body)),
                    be::ERROR_RESPONSE => {
                        let fields = ErrorFields::parse(body);
                        let text = |v: Option<&[u8]>| {
                            String::from_utf8_lossy(v.unwrap_or_default()).into_owned()
                        };
                        outcome.failed = true;
                        outcome.error =
                            Some(format!("{}: {}", text(fields.code), text(fields.message)));
                    }
                    be::NOTIFICATION_RESPONSE | be::NOTICE_RESPONSE | be::PARAMETER_STATUS => {
                        outcome.asynchronous.push(msg)
                    }
                    be::READY_FOR_QUERY => {
                        outcome.status = body
                            .first()
                            .and_then(|s| TransactionStatus::from_byte(*s))
                            .ok_or_else(|| {
                                std::io::Error::new(
                                    std::io::ErrorKind::InvalidData,
                                    "malformed ReadyForQuery",
                                )
                            })?;
                        return Ok(outcome);
                    }
                    _ => {}
                }
            }
            buf.reserve(4096);
            if self.stream.read_buf(buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}
