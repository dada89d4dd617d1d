//! MIL language: builder, printer, parser, weight blob format and ANE rule validator.
