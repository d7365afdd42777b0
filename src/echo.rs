//! The echo handler: every text or binary message goes back unchanged to its sender.
//! Used by `wsedge echo` and by the Autobahn testsuite run. It keeps no state; a small
//! message is copied on its way out (into the connection's cork), a large one never.

use crate::proto::handshake::UpgradeRequest;
use crate::proto::MessageKind;
use crate::server::{ConnId, Handler, HttpResponse, Now, Outbox, Payload};

/// The echo handler: stateless, so one per worker costs nothing.
#[derive(Debug, Default)]
pub struct Echo;

impl Handler for Echo {
    type Admission = ();

    fn accept(&mut self, _request: &UpgradeRequest, _now: Now) -> Result<(), HttpResponse> {
        Ok(()) // any path
    }

    fn on_message(&mut self, out: &mut Outbox, conn: ConnId, kind: MessageKind, data: Payload<'_>) {
        // Small: copied, on to the cork (no reference count); large: the read buffer's
        // slice it arrived in (no copy).
        out.send_payload(conn, kind, data);
    }
}
