// What the page says, in Chinese.

export const REASONS = {
  not_started: '活动尚未开始',
  ended: '活动已结束',
  automatic: '达标后自动发放',
  limit_reached: '已达领取上限',
  goal_not_met: '消费目标未达成',
  out_of_stock: '已领完',
  budget_exhausted: '活动名额已满',
}

export const STATUSES = {
  granted: '发放中',
  fulfilled: '可使用',
  redeemed: '已使用',
  expired: '已过期',
  revoked: '已撤销',
  failed: '发放失败',
}

export const CLAIM_ERRORS = {
  limit_reached: '您已领取过该权益',
  out_of_stock: '来晚了，权益已领完',
  budget_exhausted: '来晚了，活动名额已满',
  not_eligible: '暂不符合领取条件',
  campaign_not_active: '活动未开始或已结束',
  channel_not_allowed: '该活动不在本渠道开放',
  unavailable: '系统繁忙，请稍后再试',
  store_not_ready: '系统繁忙，请稍后再试',
}

const WINDOWS = { campaign: '活动期间', month: '本月', week: '本周' }

function yuan(fen) {
  return (fen / 100).toFixed(fen % 100 === 0 ? 0 : 2)
}

// The goal in words and how far along the customer is (0-100), for a progress bar.
export function goalOf(progress) {
  const goal = progress.goal
  const when = WINDOWS[goal.window] || ''
  if (goal.amount) {
    return {
      text: `${when}累计消费 ${yuan(progress.amount)} / ${yuan(goal.amount)} 元`,
      percent: Math.min(100, Math.floor((progress.amount * 100) / goal.amount)),
    }
  }
  const count = goal.count || 1
  const min = goal.min_amount ? `（单笔满 ${yuan(goal.min_amount)} 元）` : ''
  return {
    text: `${when}消费 ${progress.count} / ${count} 笔${min}`,
    percent: Math.min(100, Math.floor((progress.count * 100) / count)),
  }
}

export function localTime(iso) {
  if (!iso) return ''
  const d = new Date(iso)
  if (Number.isNaN(d.getTime())) return iso
  const p = (n) => String(n).padStart(2, '0')
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`
}
