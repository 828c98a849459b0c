//! The HTTP edge Confluence calls: descriptor, lifecycle and webhook routes.
