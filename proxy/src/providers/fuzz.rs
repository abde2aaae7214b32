//! Property tests (fuzzing) of the translators and stream parsers.
