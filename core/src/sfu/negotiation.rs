//! The node's side of renegotiating one participant's connection.
//!
//! The client offers first; after that the node sends an offer of its own
//! whenever the connection changes under it (tracks added for a new
//! publisher, ICE restarted). One node offer is in flight at a time:
//! changes that arrive meanwhile fold into one more offer, made when the
//! answer comes. The I/O layer asks before offering and reports answers;
//! this keeps the bookkeeping.

/// One participant's renegotiation state.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Negotiation {
    /// A node offer is waiting for its answer.
    offering: bool,
    /// Changes arrived while offering: offer again after the answer.
    again: bool,
}

impl Negotiation {
    /// The connection changed: true when the node should offer now; false
    /// when an offer is in flight and this change waits for its answer.
    pub fn changed(&mut self) -> bool {
        if self.offering {
            self.again = true;
            return false;
        }
        self.offering = true;
        true
    }

    /// The participant answered the node's offer: true when changes waited
    /// meanwhile and the node should offer again (through [`Self::changed`]).
    pub fn answered(&mut self) -> bool {
        self.offering = false;
        std::mem::take(&mut self.again)
    }

    /// The offer could not be made or sent: nothing is in flight.
    pub fn failed(&mut self) {
        self.offering = false;
    }

    /// Whether a node offer waits for its answer.
    pub fn offering(&self) -> bool {
        self.offering
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_offer_in_flight_and_changes_meanwhile_fold_into_one_more() {
        let mut n = Negotiation::default();
        assert!(n.changed(), "the first change offers at once");
        assert!(!n.changed(), "a second waits for the answer");
        assert!(!n.changed(), "so does a third: they fold into one");
        assert!(n.answered(), "the answer brings one more offer");
        assert!(n.changed());
        assert!(!n.answered(), "nothing waited this time");
        assert!(!n.offering());
    }

    #[test]
    fn a_failed_offer_does_not_block_the_next_change() {
        let mut n = Negotiation::default();
        assert!(n.changed());
        n.failed();
        assert!(n.changed(), "a failed offer leaves nothing in flight");
    }

    #[test]
    fn an_answer_without_an_offer_changes_nothing() {
        let mut n = Negotiation::default();
        assert!(!n.answered());
        assert!(n.changed());
    }
}
