/**
 * Reads a Check's body without holding the event loop: a body larger than one slice is
 * read a slice per turn, so other Checks are answered between slices. The densest 4 MiB
 * body takes 10-20 ms to read; no single request may hold every other one up that long.
 */
import { setImmediate } from "node:timers/promises";
import type { CheckAttributes } from "../auth/check-attributes.js";
import { type BodyView, openBody } from "../auth/extract-credential.js";

/** About a millisecond of reading the densest body. */
export const BODY_SLICE_BYTES = 256 * 1024;

/** The body's view: at once for a small body, after as many turns as it needs otherwise. */
export function readBodyInSlices(attributes: CheckAttributes): BodyView | Promise<BodyView> {
  const reading = openBody(attributes);
  if ("view" in reading) return reading.view;
  const { reader, finish } = reading;
  const first = reader.read(BODY_SLICE_BYTES);
  if (first !== undefined) return finish(first);
  return (async () => {
    for (;;) {
      await setImmediate();
      const scan = reader.read(reader.offset + BODY_SLICE_BYTES);
      if (scan !== undefined) return finish(scan);
    }
  })();
}
