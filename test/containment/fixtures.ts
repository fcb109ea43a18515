/**
 * A containment.yaml with only two signals on (every other threshold 0): a
 * Reply-To the account never used throttles (identityChange, weight 1), and
 * one body or fresh landing site from `campaignSenders` accounts in a day
 * holds (campaign, weight 2). For tests that need one predictable response
 * over real SMTP.
 */
export const twoSignalContainment = (campaignSenders: number): string => `
defaults:
  volumeFloor: 0
  volumeDayFloor: 0
  newRecipientsPerHour: 0
  newRecipientsPerDay: 0
  newDomainsPerHour: 0
  refusedPerHour: 0
  authNetworksPerHour: 0
  sameBodyPerDay: 0
  addressBookShare: 0
  strangerHours: 0
  authNewNetworksPerDay: 0
  newLinkRecipientsPerDay: 0
  identityChangesPerDay: 1
  campaignSenders: ${campaignSenders}
  responses: { throttle: 1, hold: 2, suspend: 0 }
weights: { campaign: 2, identityChange: 1 }
`;
