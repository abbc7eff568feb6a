// The relay's answer to /api/targets, checked. No DOM here: tested by web/test/relay_info.test.js.

/**
 * { names, tokenRequired, publicHost, allowedSources } from the JSON body: the target
 * names to offer, whether the relay asks for an access token, the name users reach its
 * host by (or null), and the source networks forwards accept (empty: any).
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
  };
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
