//! Pure decisions: which pod to roll next, how to scale; table-tested without I/O.
