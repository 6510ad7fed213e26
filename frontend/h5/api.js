// The page's calls: every one carries the session token (Authorization: Bearer), never a cookie.
// The token comes once in the URL (?t=...) and is moved into sessionStorage at once, so it is
// not left in the address bar, the history, or a Referer.

const KEY = 'quanyi-h5-token'

export class SessionEnded extends Error {}

export function takeToken() {
  const url = new URL(window.location.href)
  const fromUrl = url.searchParams.get('t')
  if (fromUrl) {
    sessionStorage.setItem(KEY, fromUrl)
    url.searchParams.delete('t')
    window.history.replaceState(null, '', url.pathname + url.search + url.hash)
    return fromUrl
  }
  return sessionStorage.getItem(KEY)
}

export function forgetToken() {
  sessionStorage.removeItem(KEY)
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message)
    this.status = status
    this.code = code
  }
}

async function call(token, method, path, body) {
  const headers = { Authorization: `Bearer ${token}` }
  if (body !== undefined) headers['Content-Type'] = 'application/json'
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'omit',
    cache: 'no-store',
  })
  let data = null
  try {
    data = await resp.json()
  } catch {
    data = null
  }
  if (resp.status === 401) {
    forgetToken()
    throw new SessionEnded(data?.error?.code || 'unauthorized')
  }
  if (!resp.ok) {
    throw new ApiError(resp.status, data?.error?.code || 'error', data?.error?.message || '')
  }
  return { status: resp.status, data }
}

// One id per tap: the same tap retried (a lost answer) is granted once.
export function newRequestId() {
  const bytes = new Uint8Array(12)
  crypto.getRandomValues(bytes)
  return 'tap-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
}

export const api = {
  offers: (token) => call(token, 'GET', '/h5/api/offers'),
  rights: (token) => call(token, 'GET', '/h5/api/rights'),
  claim: (token, requestId, campaignId, rewardId) =>
    call(token, 'POST', '/h5/api/claims', {
      request_id: requestId,
      campaign_id: campaignId,
      reward_id: rewardId,
    }),
}
