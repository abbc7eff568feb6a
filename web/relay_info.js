// The relay's answer to /api/targets, checked. No DOM here: tested by web/test/relay_info.test.js.

/**
 * { names, tokenRequired, publicHost, allowedSources, maxForwards, tokenHolder, portBlock,
 * tokenError } from the JSON body: the target names to offer, whether the relay asks for
 * an access token, the name users reach its host by (or null), the source networks
 * forwards accept (empty: any), the forwards one session may open (or null); and, when
 * the page sent a token, whose it is and their block of forward ports ({ first, last }),
 * or why the relay did not take it (each null otherwise).
 * Throws when the answer has no target list.
 */
export function parseTargetsAnswer(body) {
  const list = Array.isArray(body?.targets) ? body.targets : null;
  if (!list) throw new Error("the relay's answer has no target list");
  const names = list
    .map((t) => (typeof t === "string" ? t : t?.name))
    .filter((n) => typeof n === "string" && n !== "");
  return {
    names,
    tokenRequired: body.token_required === true,
    publicHost: typeof body.public_host === "string" && body.public_host !== "" ? body.public_host : null,
    allowedSources: Array.isArray(body.forward_allowed_sources)
      ? body.forward_allowed_sources.filter((n) => typeof n === "string")
      : [],
    maxForwards: Number.isInteger(body.forwards_per_session) && body.forwards_per_session > 0
      ? body.forwards_per_session
      : null,
    tokenHolder: typeof body.token_holder === "string" && body.token_holder !== "" ? body.token_holder : null,
    portBlock: portBlockOf(body.port_block),
    tokenError: typeof body.token_error === "string" && body.token_error !== "" ? body.token_error : null,
  };
}

const isPort = (n) => Number.isInteger(n) && n >= 1 && n <= 65535;

function portBlockOf(block) {
  if (!block || !isPort(block.first) || !isPort(block.last) || block.first > block.last) return null;
  return { first: block.first, last: block.last };
}

/**
 * The access token in a link's fragment (`#token=…`, maybe among other `&` parts):
 * null when there is none, { token } when there is one, { damaged: true } when it cannot
 * be decoded (a stray % from a mail client's line wrap) or is empty.
 */
export function tokenFromFragment(hash) {
  const match = hash.match(/(?:^#|&)token=([^&]*)/);
  if (!match) return null;
  let token = null;
  try {
    token = decodeURIComponent(match[1]);
  } catch {
    // URIError: a % not followed by two hex digits, or bytes that are not UTF-8.
  }
  return token ? { token } : { damaged: true };
}
