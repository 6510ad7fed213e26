import { createRouter, createWebHistory } from 'vue-router'
import { session, whenSignedOut } from './api.js'
import Login from './views/Login.vue'
import Dashboard from './views/Dashboard.vue'
import Campaigns from './views/Campaigns.vue'
import CampaignEditor from './views/CampaignEditor.vue'
import CampaignDetail from './views/CampaignDetail.vue'
import Approvals from './views/Approvals.vue'
import Audiences from './views/Audiences.vue'
import Vendors from './views/Vendors.vue'
import Grants from './views/Grants.vue'
import Audit from './views/Audit.vue'
import Rights from './views/Rights.vue'
import Issuances from './views/Issuances.vue'

export const router = createRouter({
  history: createWebHistory('/console/'),
  routes: [
    { path: '/login', component: Login, meta: { open: true } },
    { path: '/', redirect: '/dashboard' },
    { path: '/dashboard', component: Dashboard },
    { path: '/campaigns', component: Campaigns },
    { path: '/campaigns/new', component: CampaignEditor },
    { path: '/campaigns/:id/edit', component: CampaignEditor, props: true },
    { path: '/campaigns/:id', component: CampaignDetail, props: true },
    { path: '/approvals', component: Approvals },
    { path: '/rights', component: Rights },
    { path: '/audiences', component: Audiences },
    { path: '/vendors', component: Vendors },
    { path: '/grants', component: Grants },
    { path: '/issuances', component: Issuances },
    { path: '/issuances/:id', component: Issuances, props: true },
    { path: '/audit', component: Audit },
    { path: '/:rest(.*)*', redirect: '/dashboard' },
  ],
})

router.beforeEach((to) => {
  if (!to.meta.open && !session.token) return { path: '/login', query: { next: to.fullPath } }
})

whenSignedOut(() => router.push('/login'))
