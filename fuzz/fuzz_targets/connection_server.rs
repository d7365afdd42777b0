//! A byte stream from a client, in fuzz-chosen chunks, fed to a server-role `Connection`
//! (sometimes with permessage-deflate). See `wsedge_fuzz::stream` for the input layout and
//! the invariants checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsedge::proto::Role;

fuzz_target!(|data: &[u8]| wsedge_fuzz::stream::run(Role::Server, data));
