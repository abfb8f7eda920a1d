/* A 5x7 bitmap font for the labels written on overlay pictures
 * (runtime/overlay.c): upper-case letters, digits and a little
 * punctuation, one constant table, no font library. */
#ifndef SL_FONT5X7_H
#define SL_FONT5X7_H

#include <stdint.h>

enum { FONT_W = 5, FONT_H = 7 };

/* The 7 rows of character c, top first, bit 4 the leftmost pixel; NULL
 * for a character the table lacks (drawn as a blank).  Lower-case letters
 * are drawn as upper case. */
const uint8_t *font5x7_glyph(char c);

#endif
