// Every call of the console goes through the admin API with the staff member's own token: the
// console can do nothing the API would not let that person do.
import { reactive } from 'vue'

const TOKEN_KEY = 'quanyi.token'
const ME_KEY = 'quanyi.me'

export const session = reactive({
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  me: JSON.parse(sessionStorage.getItem(ME_KEY) || 'null'),
})

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {}
    super(err.message || err.code || `HTTP ${status}`)
    this.status = status
    this.code = err.code || String(status)
    this.body = body
  }
}

let onSignedOut = () => {}
export function whenSignedOut(fn) {
  onSignedOut = fn
}

function forget() {
  session.token = ''
  session.me = null
  sessionStorage.removeItem(TOKEN_KEY)
  sessionStorage.removeItem(ME_KEY)
}

export async function call(method, path, body, { contentType } = {}) {
  const headers = {}
  if (session.token) headers.Authorization = `Bearer ${session.token}`
  let data
  if (body !== undefined && body !== null) {
    if (contentType) {
      headers['Content-Type'] = contentType
      data = body
    } else {
      headers['Content-Type'] = 'application/json'
      data = JSON.stringify(body)
    }
  }
  const resp = await fetch(path, { method, headers, body: data })
  const text = await resp.text()
  let parsed = null
  try {
    parsed = text ? JSON.parse(text) : null
  } catch {
    parsed = text
  }
  if (resp.status === 401 && session.token) {
    forget()
    onSignedOut()
  }
  if (!resp.ok) throw new ApiError(resp.status, parsed)
  return { status: resp.status, body: parsed }
}

export const get = async (path) => (await call('GET', path)).body
export const post = async (path, body) => (await call('POST', path, body ?? undefined)).body
export const put = async (path, body) => (await call('PUT', path, body)).body

export async function login(username, password) {
  const reply = await post('/admin/v1/login', { username, password })
  session.token = reply.token
  sessionStorage.setItem(TOKEN_KEY, reply.token)
  let me = { username, role: null, branch: null, branches: [] }
  try {
    me = await get('/admin/v1/me')
  } catch {
    // an API without /me: the username is all we know
  }
  session.me = { ...me, must_change_password: reply.must_change_password }
  sessionStorage.setItem(ME_KEY, JSON.stringify(session.me))
  return session.me
}

export async function logout() {
  try {
    await post('/admin/v1/logout')
  } finally {
    forget()
  }
}

// A file upload with progress (fetch reports none): PUT body with XMLHttpRequest.
export function upload(method, path, file, contentType, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest()
    xhr.open(method, path)
    xhr.setRequestHeader('Authorization', `Bearer ${session.token}`)
    xhr.setRequestHeader('Content-Type', contentType)
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) onProgress(Math.round((e.loaded / e.total) * 100))
    }
    xhr.onload = () => {
      let body = null
      try {
        body = JSON.parse(xhr.responseText)
      } catch {
        body = xhr.responseText
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body)
      else reject(new ApiError(xhr.status, body))
    }
    xhr.onerror = () => reject(new ApiError(0, null))
    xhr.send(file)
  })
}

export const yuan = (fen) => (fen === null || fen === undefined ? '—' : (fen / 100).toFixed(2))
