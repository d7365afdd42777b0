//! Gathering: questions the in-memory engine asks every worker and answers once all
//! have replied: `GET /api/rooms` and `/metrics` (each worker's owned rooms), and a
//! client's `ping` (an acknowledgement from each).
//!
//! Each worker replies after everything it was sent before the question (the mesh is
//! FIFO per pair of workers), so the answer also comes after every effect of what was
//! asked before it: that is what makes `ping` a barrier.

use std::collections::HashMap;

use super::{Answer, ReplyTo, RoomsSummary};

/// What a gathering answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question {
    /// Every worker's rooms ([`Answer::Rooms`]).
    Rooms,
    /// Only that every worker got this far ([`Answer::Synced`]).
    Sync,
}

#[derive(Debug)]
struct Gathering {
    remaining: usize,
    to: ReplyTo,
    question: Question,
    parts: RoomsSummary,
}

/// The open gatherings of one worker, by token.
#[derive(Debug, Default)]
pub struct Gatherings {
    next: u64,
    open: HashMap<u64, Gathering>,
}

impl Gatherings {
    /// Opens a gathering of `workers` parts; returns the token the parts come back with.
    pub fn open(&mut self, to: ReplyTo, question: Question, workers: usize) -> u64 {
        let token = self.next;
        self.next += 1;
        let gathering = Gathering { remaining: workers, to, question, parts: RoomsSummary::default() };
        self.open.insert(token, gathering);
        token
    }

    /// One worker's part; when it was the last, the answer and who waits for it.
    pub fn part(&mut self, token: u64, part: Option<RoomsSummary>) -> Option<(ReplyTo, Answer)> {
        let gathering = self.open.get_mut(&token)?;
        if let Some(part) = part {
            gathering.parts.absorb(part);
        }
        gathering.remaining = gathering.remaining.saturating_sub(1);
        if gathering.remaining > 0 {
            return None;
        }
        let gathering = self.open.remove(&token)?;
        let answer = match gathering.question {
            Question::Rooms => Answer::Rooms(gathering.parts),
            Question::Sync => Answer::Synced,
        };
        Some((gathering.to, answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::ConnId;

    #[test]
    fn the_answer_comes_with_the_last_part() {
        let mut gatherings = Gatherings::default();
        let to = ReplyTo::Http(ConnId::from_parts(1, 0));
        let token = gatherings.open(to, Question::Rooms, 2);
        let part =
            |n| RoomsSummary { rooms: vec![(format!("r{n}").into(), n, 1)], history_messages: n, history_bytes: 10 };
        assert!(gatherings.part(token, Some(part(1))).is_none());
        let (who, answer) = gatherings.part(token, Some(part(2))).expect("complete");
        assert!(matches!(who, ReplyTo::Http(c) if c == ConnId::from_parts(1, 0)));
        let Answer::Rooms(all) = answer else { panic!("{answer:?}") };
        assert_eq!((all.rooms.len(), all.history_messages, all.history_bytes), (2, 3, 20));
        assert!(gatherings.part(token, None).is_none(), "closed");
    }
}
