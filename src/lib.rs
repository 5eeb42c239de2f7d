//! pgrouter
