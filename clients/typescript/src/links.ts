/**
 * The cursor of the next page, read from a list answer's `Link` header (RFC 8288).
 *
 * The API names the next page with every parameter of the request kept and only the
 * cursor new, so the cursor is all a client needs: it asks again, through its own base
 * URL, with the same parameters and this cursor.
 */
export function nextCursor(link: string | null): string | null {
  if (link === null) return null;
  for (const [, target, params] of link.matchAll(/<([^>]*)>((?:\s*;\s*[^;,]*)*)/g)) {
    if (target === undefined || !hasRel(params ?? "", "next")) continue;
    // A relative target is resolved against a placeholder: only its query is read.
    return new URL(target, "http://link.invalid").searchParams.get("cursor");
  }
  return null;
}

function hasRel(params: string, wanted: string): boolean {
  for (const param of params.split(";")) {
    const match = /^\s*rel\s*=\s*(?:"([^"]*)"|([^\s"]+))\s*$/i.exec(param);
    const value = match?.[1] ?? match?.[2];
    if (value !== undefined && value.toLowerCase().split(/\s+/).includes(wanted)) return true;
  }
  return false;
}
