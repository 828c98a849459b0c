//! The consumer runtime, handler API and Confluence REST client.
