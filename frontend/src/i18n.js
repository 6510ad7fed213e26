// A small dictionary: Chinese by default, English selectable; the choice is kept in localStorage.
import { ref, watch } from 'vue'

const messages = {
  zh: {
    'rev.title': '修订（运行中的活动）', 'rev.none': '暂无修订', 'rev.changes': '变更', 'rev.new': '新修订', 'rev.endsAt': '结束时间',
    'rev.draft': '起草', 'rev.s.draft': '草稿', 'rev.s.pending': '待审批', 'rev.s.applied': '已生效', 'rev.s.rejected': '已驳回',
    'nav.rights': '权益目录',
    'rights.new': '新增权益', 'rights.kind': '类型', 'rights.faceValue': '面值（元）', 'rights.admit': '准入',
    'rights.suspend': '暂停', 'rights.resume': '恢复', 'rights.retire': '退出',
    'rstate.proposed': '待准入', 'rstate.admitted': '已准入', 'rstate.suspended': '已暂停', 'rstate.retired': '已退出',
    'kind.voucher': '券', 'kind.points': '积分', 'kind.lounge_pass': '贵宾厅', 'kind.cashback': '返现', 'kind.coupon': '优惠券',
    'kind.physical': '实物', 'kind.other': '其他',
    'app.title': '权益平台 · 员工控制台', 'app.logout': '退出',
    'login.username': '用户名', 'login.password': '密码', 'login.submit': '登录',
    'login.wrong': '用户名或密码错误', 'login.mustChange': '首次登录或密码已重置：请设置新密码（至少 8 位）', 'login.newPassword': '新密码', 'login.again': '再次输入', 'login.setPassword': '设置密码', 'login.mismatch': '两次输入不一致', 'login.locked': '失败次数过多，请稍后再试',
    'nav.dashboard': '数据看板', 'nav.campaigns': '活动', 'nav.approvals': '待审批', 'nav.audiences': '客群',
    'nav.vendors': '供应商', 'nav.grants': '权益发放', 'nav.audit': '审计日志',
    'role.marketer': '营销', 'role.approver': '审批', 'role.admin': '管理员', 'role.auditor': '审计', 'role.operator': '运维',
    'common.refresh': '刷新', 'common.search': '查询', 'common.save': '保存', 'common.cancel': '取消',
    'common.remove': '删除', 'common.actions': '操作',
    'fig.issued': '发放', 'fig.redeemed': '核销', 'fig.costYuan': '成本（元）', 'fig.yuan': '元', 'fig.unitCostYuan': '单价（元）',
    'dash.last30': '近 30 天', 'dash.today': '今天', 'dash.byDay': '每日发放与核销', 'dash.costByDay': '每日成本', 'dash.funnel': '转化漏斗', 'dash.pickCampaign': '选择一个活动',
    'dash.topCampaigns': '热门活动', 'dash.stockAlerts': '库存预警（剩余 ≤ 10%）', 'dash.noAlerts': '暂无预警',
    'dash.liability': '未核销权益（负债）', 'dash.outstanding': '未核销', 'dash.internal': '行内', 'dash.faceValue': '面值（元）', 'dash.redemptionRate': '核销率',
    'funnel.audience': '客群人数', 'funnel.eligible': '曝光客户', 'funnel.qualified': '达标客户', 'funnel.issued': '发放',
    'funnel.fulfilled': '履约', 'funnel.redeemed': '核销',
    'campaign.id': '活动编号', 'campaign.name': '名称', 'campaign.branch': '机构', 'campaign.status': '状态',
    'campaign.granted': '已发放', 'campaign.remaining': '剩余', 'campaign.persisted': '已入账', 'campaign.spent': '已花费（元）',
    'campaign.window': '活动时间', 'campaign.channels': '渠道', 'campaign.reward': '奖励', 'campaign.rewards': '奖励',
    'campaign.right': '权益', 'campaign.new': '新建活动', 'campaign.edit': '编辑', 'campaign.review': '审阅',
    'campaign.makers': '经办人', 'campaign.approvedBy': '审批人', 'campaign.ledgerLag': '账务延迟（条）',
    'campaign.liveHint': '计数每 5 秒刷新', 'campaign.dual': '双人审批：已有 {have} / 需要 {need}',
    'status.draft': '草稿', 'status.pending': '待审批', 'status.approved': '已批准', 'status.rejected': '已驳回',
    'status.paused': '已暂停', 'status.ended': '已结束',
    'phase.scheduled': '未开始', 'phase.running': '进行中', 'phase.ended': '已过期',
    'action.submit': '提交审批', 'action.approve': '批准', 'action.reject': '驳回', 'action.pause': '暂停',
    'action.resume': '恢复', 'action.end': '结束', 'action.done': '{action}成功', 'action.needsSecond': '{action}已记录，还需第二位审批人',
    'editor.basics': '基本信息', 'editor.budgetYuan': '预算（元）', 'editor.budgetHint': '留空：库存 × 单价',
    'editor.rewardId': '奖励编号', 'editor.stock': '总库存', 'editor.dailyStock': '每日库存', 'editor.perCustomer': '每人限领',
    'editor.perCustomerDaily': '每人每日', 'editor.audience': '目标客群', 'editor.anyone': '不限', 'editor.goal': '达标条件',
    'editor.goalWindow': '统计周期', 'editor.wCampaign': '活动期内', 'editor.wMonth': '每月', 'editor.wWeek': '每周',
    'editor.goalCount': '交易笔数', 'editor.goalAmount': '累计金额（元）', 'editor.goalMin': '单笔至少（元）',
    'editor.mccIn': '商户类别码', 'editor.grantMode': '发放方式', 'editor.auto': '达标自动发放', 'editor.claim': '达标后领取',
    'editor.clawBack': '退货时收回', 'editor.addReward': '添加奖励', 'editor.limits': '限领', 'editor.perDay': '/日', 'editor.times': '笔',
    'dry.title': '试算（审批前预测）', 'dry.run': '试算', 'dry.hint': '上传历史交易 CSV：customer_id,amount,mcc,occurred_at',
    'dry.customers': '客户数', 'dry.qualified': '达标', 'dry.grants': '预计发放', 'dry.exhausted': '库存耗尽时间',
    'grants.revoke': '撤销权益', 'grants.id': '发放编号', 'grants.reason': '原因', 'grants.confirm': '确认撤销 {id}？',
    'grants.revoked': '已撤销', 'grants.lookupLater': '按发放编号或客户查询需要员工查询接口（暂未提供），渠道可通过 /v1/grants 查询。',
    'audit.actor': '操作人', 'audit.object': '对象', 'audit.action': '动作', 'audit.at': '时间', 'audit.detail': '详情', 'audit.more': '更多',
    'aud.create': '新建客群', 'aud.id': '客群编号', 'aud.import': '导入名单', 'aud.members': '人数', 'aud.version': '版本',
    'aud.importedBy': '导入人', 'aud.importedAt': '导入时间', 'aud.processing': '上传完成，处理中…',
    'aud.result': '导入 {members} 人，拒绝 {rejected} 行',
    'vendors.registry': '供应商', 'vendors.adapter': '接入方式', 'vendors.state': '状态', 'vendors.inFlight': '并发上限',
    'vendors.days': '每日对账', 'vendors.day': '日期', 'vendors.callbacks': '回调核销', 'vendors.billedMinusIssued': '账单 − 发放',
    'vendors.later': '熔断状态、死信重投与券码池水位需要相应接口（暂未提供）。',
  },
  en: {
    'rev.title': 'Revisions (of a running campaign)', 'rev.none': 'No revisions', 'rev.changes': 'Changes', 'rev.new': 'New revision', 'rev.endsAt': 'ends at',
    'rev.draft': 'Draft', 'rev.s.draft': 'draft', 'rev.s.pending': 'pending', 'rev.s.applied': 'applied', 'rev.s.rejected': 'rejected',
    'nav.rights': 'Rights',
    'rights.new': 'New right', 'rights.kind': 'Kind', 'rights.faceValue': 'Face value (yuan)', 'rights.admit': 'Admit',
    'rights.suspend': 'Suspend', 'rights.resume': 'Resume', 'rights.retire': 'Retire',
    'rstate.proposed': 'proposed', 'rstate.admitted': 'admitted', 'rstate.suspended': 'suspended', 'rstate.retired': 'retired',
    'kind.voucher': 'voucher', 'kind.points': 'points', 'kind.lounge_pass': 'lounge pass', 'kind.cashback': 'cashback', 'kind.coupon': 'coupon',
    'kind.physical': 'physical', 'kind.other': 'other',
    'app.title': 'Quanyi · Staff console', 'app.logout': 'Log out',
    'login.username': 'Username', 'login.password': 'Password', 'login.submit': 'Log in',
    'login.wrong': 'Wrong username or password', 'login.mustChange': 'First login or a reset: set a new password (8 characters at least)', 'login.newPassword': 'New password', 'login.again': 'Again', 'login.setPassword': 'Set password', 'login.mismatch': 'The two do not match', 'login.locked': 'Too many attempts; try again later',
    'nav.dashboard': 'Dashboard', 'nav.campaigns': 'Campaigns', 'nav.approvals': 'Approvals', 'nav.audiences': 'Audiences',
    'nav.vendors': 'Vendors', 'nav.grants': 'Grants', 'nav.audit': 'Audit log',
    'role.marketer': 'marketer', 'role.approver': 'approver', 'role.admin': 'admin', 'role.auditor': 'auditor', 'role.operator': 'operator',
    'common.refresh': 'Refresh', 'common.search': 'Search', 'common.save': 'Save', 'common.cancel': 'Cancel',
    'common.remove': 'Remove', 'common.actions': 'Actions',
    'fig.issued': 'Issued', 'fig.redeemed': 'Redeemed', 'fig.costYuan': 'Cost (yuan)', 'fig.yuan': 'yuan', 'fig.unitCostYuan': 'Unit cost (yuan)',
    'dash.last30': 'last 30 days', 'dash.today': 'today', 'dash.byDay': 'Issued and redeemed by day', 'dash.costByDay': 'Cost by day', 'dash.funnel': 'Funnel', 'dash.pickCampaign': 'Pick a campaign',
    'dash.topCampaigns': 'Top campaigns', 'dash.stockAlerts': 'Stock alerts (≤ 10 % left)', 'dash.noAlerts': 'No alerts',
    'dash.liability': 'Liability (unredeemed rights)', 'dash.outstanding': 'Outstanding', 'dash.internal': 'in-house', 'dash.faceValue': 'face value (yuan)', 'dash.redemptionRate': 'Redemption rate',
    'funnel.audience': 'Audience', 'funnel.eligible': 'Offered', 'funnel.qualified': 'Reached goal', 'funnel.issued': 'Issued',
    'funnel.fulfilled': 'Fulfilled', 'funnel.redeemed': 'Redeemed',
    'campaign.id': 'Campaign', 'campaign.name': 'Name', 'campaign.branch': 'Branch', 'campaign.status': 'Status',
    'campaign.granted': 'Granted', 'campaign.remaining': 'Remaining', 'campaign.persisted': 'In ledger', 'campaign.spent': 'Spent (yuan)',
    'campaign.window': 'Window', 'campaign.channels': 'Channels', 'campaign.reward': 'Reward', 'campaign.rewards': 'Rewards',
    'campaign.right': 'Right', 'campaign.new': 'New campaign', 'campaign.edit': 'Edit', 'campaign.review': 'Review',
    'campaign.makers': 'Makers', 'campaign.approvedBy': 'Approved by', 'campaign.ledgerLag': 'Ledger lag (entries)',
    'campaign.liveHint': 'Counters refresh every 5 s', 'campaign.dual': 'Dual control: {have} of {need} approvals',
    'status.draft': 'draft', 'status.pending': 'pending', 'status.approved': 'approved', 'status.rejected': 'rejected',
    'status.paused': 'paused', 'status.ended': 'ended',
    'phase.scheduled': 'scheduled', 'phase.running': 'running', 'phase.ended': 'over',
    'action.submit': 'Submit', 'action.approve': 'Approve', 'action.reject': 'Reject', 'action.pause': 'Pause',
    'action.resume': 'Resume', 'action.end': 'End', 'action.done': '{action}: done', 'action.needsSecond': '{action}: recorded; a second approver is needed',
    'editor.basics': 'Basics', 'editor.budgetYuan': 'Budget (yuan)', 'editor.budgetHint': 'empty: stock × unit cost',
    'editor.rewardId': 'Reward id', 'editor.stock': 'Stock', 'editor.dailyStock': 'Daily stock', 'editor.perCustomer': 'Per customer',
    'editor.perCustomerDaily': 'Per customer a day', 'editor.audience': 'Audience', 'editor.anyone': 'anyone', 'editor.goal': 'Goal',
    'editor.goalWindow': 'Window', 'editor.wCampaign': 'Campaign', 'editor.wMonth': 'Month', 'editor.wWeek': 'Week',
    'editor.goalCount': 'Purchases', 'editor.goalAmount': 'Amount (yuan)', 'editor.goalMin': 'Each at least (yuan)',
    'editor.mccIn': 'Merchant categories', 'editor.grantMode': 'Grant', 'editor.auto': 'Automatically', 'editor.claim': 'Claimed',
    'editor.clawBack': 'Claw back on refund', 'editor.addReward': 'Add reward', 'editor.limits': 'Limits', 'editor.perDay': 'a day', 'editor.times': 'purchases',
    'dry.title': 'Dry run (forecast before approval)', 'dry.run': 'Run', 'dry.hint': 'CSV of past transactions: customer_id,amount,mcc,occurred_at',
    'dry.customers': 'Customers', 'dry.qualified': 'Qualified', 'dry.grants': 'Grants', 'dry.exhausted': 'Stock runs out',
    'grants.revoke': 'Revoke a grant', 'grants.id': 'Grant id', 'grants.reason': 'Reason', 'grants.confirm': 'Revoke {id}?',
    'grants.revoked': 'Revoked', 'grants.lookupLater': 'Looking grants up by id or customer needs a staff read endpoint (not there yet); channels read them at /v1/grants.',
    'audit.actor': 'Actor', 'audit.object': 'Object', 'audit.action': 'Action', 'audit.at': 'At', 'audit.detail': 'Detail', 'audit.more': 'More',
    'aud.create': 'New audience', 'aud.id': 'Audience id', 'aud.import': 'Import members', 'aud.members': 'Members', 'aud.version': 'Version',
    'aud.importedBy': 'Imported by', 'aud.importedAt': 'Imported at', 'aud.processing': 'Uploaded; processing…',
    'aud.result': '{members} members imported, {rejected} lines rejected',
    'vendors.registry': 'Vendors', 'vendors.adapter': 'Adapter', 'vendors.state': 'State', 'vendors.inFlight': 'Max in flight',
    'vendors.days': 'By day', 'vendors.day': 'Day', 'vendors.callbacks': 'Redeemed (callbacks)', 'vendors.billedMinusIssued': 'Billed − issued',
    'vendors.later': 'Circuit state, dead-letter redrive and code pool levels need their endpoints (not there yet).',
  },
}

export const lang = ref(localStorage.getItem('quanyi.lang') === 'en' ? 'en' : 'zh')

export function t(key, params) {
  let text = messages[lang.value][key] ?? messages.zh[key] ?? key
  if (params) for (const [k, v] of Object.entries(params)) text = text.replaceAll(`{${k}}`, v)
  return text
}

function remember(value) {
  localStorage.setItem('quanyi.lang', value)
  document.documentElement.lang = value === 'zh' ? 'zh-CN' : 'en'
}
watch(lang, remember)
remember(lang.value)

export const i18n = {
  install(app) {
    // Reading lang.value inside $t makes every template that translates re-render on a switch.
    app.config.globalProperties.$t = t
  },
}
