/*-------------------------------------------------------------------------
 *
 * rvtext.h
 *	  UTF-8 helpers shared by the pure modules (syntax, template, JSON
 *	  Schema, cascade, provider formats): one copy of each.
 *
 * Pure: no PostgreSQL headers.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RV_TEXT_H
#define RV_TEXT_H

#include <stddef.h>
#include <stdint.h>

/* Number of UTF-8 characters in s[0..n) (bytes that are no continuation). */
extern size_t rv_utf8_count(const char *s, size_t n);

/*
 * Byte length of the character starting at s[i] of s[0..n): 1 plus the
 * continuation bytes that follow (at most 4 in all).
 */
extern size_t rv_utf8_charlen(const char *s, size_t n, size_t i);

/*
 * Length of the well-formed UTF-8 sequence at s (at most avail bytes), or
 * 0 when the bytes there are not one (overlong forms, surrogates and code
 * points above U+10FFFF are rejected).
 */
extern size_t rv_utf8_valid_len(const unsigned char *s, size_t avail);

/* Encode code point cp (below 0x110000) into out (4 bytes); the length. */
extern size_t rv_utf8_encode(uint32_t cp, char *out);

#endif							/* RV_TEXT_H */
