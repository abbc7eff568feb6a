// A token holder's block of forward ports, as the page shows and checks it. No DOM here:
// tested by web/test/lab_link.test.js.

/** "20000-20009" for { first, last }. */
export function blockText(block) {
  return `${block.first}-${block.last}`;
}

/**
 * Why `port` (a forward's listen port) cannot be used with `block` (null: no block, any
 * port may be tried), or null when it can. Port 0 asks the relay for a free port of the
 * block, so it always can. Worded like the relay's own refusal, which it spares a round trip.
 */
export function outsideBlock(port, block) {
  if (!block || port === 0 || (port >= block.first && port <= block.last)) return null;
  return `port ${port} is outside your block ${blockText(block)} of this relay's forward ports (each token holder has their own); pick a port in it, or 0 for any free one`;
}
