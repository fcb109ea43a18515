/**
 * Policy files shared by the Postfix scenarios:
 *   127.0.0.0/28   residential-dynamic (plan residential: 3 recipients an hour)
 *   127.0.0.16/29  business (bakery.test only; excess recipients held)
 *   127.0.0.3      XBL-listed in zen.test
 */
export const NETBLOCKS = [
  { cidr: '127.0.0.0/28', class: 'residential-dynamic' },
  { cidr: '127.0.0.16/29', class: 'business' },
];

export const DNSBL = (server: string) => `
resolver: { servers: ["${server}"], timeout: 400ms, tries: 1 }
queryPrivate: true
zones:
  - name: zen
    zone: zen.test
    codes: { 127.0.0.4-127.0.0.7: xbl }
    actions:
      xbl: { action: reject, reply: dnsbl_listed, detail: "see https://help.isp.test/infected?ip={ip}" }
    onError: accept
`;

export const QUOTAS = `
plans:
  residential: { recipientsPerHour: 3 }
  business: { recipientsPerHour: 1, onExceed: hold }
defaultPlan: residential
classPlans: { residential-dynamic: residential, business: business }
`;

export const IDENTITY = `
intercept:
  classes: {}
  netblocks:
    - cidr: 127.0.0.16/29
      domains: [bakery.test]
      envelopeSender: restricted
      headerFrom: restricted
      nullSender: allow
      onMismatch: reject
`;

/** Complaint feedback on: its sender token is what the policy service prepends and the milter adds. */
export const FEEDBACK = 'address: fbl@gw.isp.test\nlisteners: [intercept]\nproviders: [{ name: yahoo, domains: [yahoo.test] }]\nsenderToken: { keyFile: sender-token.key }\n';
