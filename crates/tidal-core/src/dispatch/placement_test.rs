//! Unit tests of the planner at cluster format version 5.
