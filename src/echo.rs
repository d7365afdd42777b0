//! The echo handler: every text or binary message goes back unchanged to its sender.
//! Used by `wsedge echo` and by the Autobahn testsuite run. It keeps no state and never
//! copies a payload.

use bytes::Bytes;

use crate::proto::handshake::UpgradeRequest;
use crate::proto::MessageKind;
use crate::server::{ConnId, Handler, HttpResponse, Now, Outbox};

/// The echo handler: stateless, so one per worker costs nothing.
#[derive(Debug, Default)]
pub struct Echo;

impl Handler for Echo {
    type Admission = ();

    fn accept(&mut self, _request: &UpgradeRequest, _now: Now) -> Result<(), HttpResponse> {
        Ok(()) // any path
    }

    fn on_message(&mut self, out: &mut Outbox, conn: ConnId, kind: MessageKind, data: Bytes) {
        // The payload `Bytes` is the slice of the read buffer it arrived in: no copy.
        out.send(conn, kind, data);
    }
}
