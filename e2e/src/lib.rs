//! End-to-end suite (see README).
