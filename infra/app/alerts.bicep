// One action group and the alert rules on what the app emits. All rules are log search alerts
// (scheduled query rules) over Application Insights: customMetrics for the app's OpenTelemetry
// metrics, requests for the HTTP functions' latency. Every rule has the same shape: the query
// returns one row per problem (split by the rule's dimensions) and the rule fires on any row.
param namePrefix string
param location string
param tags object = {}
param appInsightsName string
param alertEmail string = ''
@secure()
param alertWebhookUrl string = ''
param gatewayErrorRatePercent int
param gatewayP95LatencyMs int
param requestLogBacklogThreshold int
param driftErrorRatePercent int
param driftContentFilterRatePercent int
param driftLatencyP95Ms int
@description('A rate or percentile over fewer calls than this is noise: no alert.')
param minimumCalls int = 20

// The OpenTelemetry instrument names the app creates, as they appear in customMetrics.name
// (attributes are in customDimensions). tests/unit/test_infra_contract.py checks that this
// list and the code agree, in both directions.
var metricNames = {
  driftDetected: 'llmops.drift.detected'
  driftFeatureDrifted: 'llmops.drift.feature_drifted'
  driftErrorRate: 'llmops.drift.error_rate'
  driftContentFilterRate: 'llmops.drift.content_filter_rate'
  driftLatencyP95: 'llmops.drift.latency_p95_ms'
  gatewayDuration: 'llmops.gateway.duration'
  gatewayErrors: 'llmops.gateway.errors'
  requestLogSpilled: 'llmops.requestlog.spilled'
  requestLogBacklog: 'llmops.requestlog.backlog'
  retrainFailures: 'llmops.retrain.failures'
}
// Emitted for dashboards and workbooks, no alert: token counts have no universal threshold,
// and the time to first byte is covered by the p95 latency rule.
var unalertedMetricNames = {
  driftScore: 'llmops.drift.score' // the value behind llmops.drift.feature_drifted, for charts
  gatewayTokens: 'llmops.gateway.tokens'
  gatewayTtft: 'llmops.gateway.ttft'
}
// The gateway's chat functions (llmops/gateway/blueprint.py), as named in `requests`.
var chatFunctions = '"chat_completions", "azure_chat_completions"'

// Drift gauges carry one analysed window's verdict. A rule looks at the last hour, so it fires
// within the hour after the timer ran, whatever the schedule. The OpenTelemetry SDK re-exports a
// synchronous gauge's last value at every export while the process lives, so a verdict can
// keep showing (and its alert stay on) until the next run or the instance's end.
var driftWindow = 'PT1H'
var driftFrequency = 'PT15M'

var rules = [
  {
    name: 'drift-detected'
    displayName: 'LLMOps: traffic drift detected'
    description: 'The drift monitor found dataset drift in a window (llmops.drift.detected = 1). Open the report in the drift-reports container.'
    severity: 2
    window: driftWindow
    frequency: driftFrequency
    dimensions: []
    query: join([
      'customMetrics'
      '| where name == "${metricNames.driftDetected}"'
      '| where valueMax >= 1'
    ], '\n')
  }
  {
    name: 'drift-feature'
    displayName: 'LLMOps: a feature drifted'
    description: 'A feature\'s drift test crossed its threshold (llmops.drift.feature_drifted = 1; its score is llmops.drift.score); one alert per feature.'
    severity: 3
    window: driftWindow
    frequency: driftFrequency
    dimensions: [
      {
        name: 'feature'
        operator: 'Include'
        values: [
          '*'
        ]
      }
    ]
    query: join([
      'customMetrics'
      '| where name == "${metricNames.driftFeatureDrifted}"'
      '| extend feature = tostring(customDimensions["feature"])'
      '| where valueMax >= 1'
      '| project timestamp, feature, drifted = valueMax'
    ], '\n')
  }
  {
    name: 'drift-error-rate'
    displayName: 'LLMOps: error rate of a drift window'
    description: 'Share of failed calls in an analysed window above ${driftErrorRatePercent}% (llmops.drift.error_rate).'
    severity: 3
    window: driftWindow
    frequency: driftFrequency
    dimensions: []
    query: join([
      'customMetrics'
      '| where name == "${metricNames.driftErrorRate}"'
      '| where valueMax * 100.0 > ${driftErrorRatePercent}'
    ], '\n')
  }
  {
    name: 'drift-content-filter-rate'
    displayName: 'LLMOps: content-filter rate of a drift window'
    description: 'Share of calls stopped by the content filter in an analysed window above ${driftContentFilterRatePercent}% (llmops.drift.content_filter_rate).'
    severity: 3
    window: driftWindow
    frequency: driftFrequency
    dimensions: []
    query: join([
      'customMetrics'
      '| where name == "${metricNames.driftContentFilterRate}"'
      '| where valueMax * 100.0 > ${driftContentFilterRatePercent}'
    ], '\n')
  }
  {
    name: 'drift-latency-p95'
    displayName: 'LLMOps: p95 latency of a drift window'
    description: '95th percentile latency of an analysed window above ${driftLatencyP95Ms} ms (llmops.drift.latency_p95_ms).'
    severity: 3
    window: driftWindow
    frequency: driftFrequency
    dimensions: []
    query: join([
      'customMetrics'
      '| where name == "${metricNames.driftLatencyP95}"'
      '| where valueMax > ${driftLatencyP95Ms}'
    ], '\n')
  }
  {
    // Server-side failures over all calls, from the gateway's own counters rather than the
    // `requests` table: a stream that fails after its 200 is an error only the gateway sees,
    // and client mistakes (400 validation, 401 keys, 404 models) are `success == false` in
    // `requests` but not the gateway's fault. Counters export deltas, so errors = sum of
    // valueSum; the duration histogram holds one count per call, so calls = sum of valueCount.
    // 429s (upstream capacity) count too.
    name: 'gateway-error-rate'
    displayName: 'LLMOps: gateway error rate'
    description: 'More than ${gatewayErrorRatePercent}% of calls failed on the server side (5xx, broken streams, 429) in 15 minutes (llmops.gateway.errors / llmops.gateway.duration).'
    severity: 1
    window: 'PT15M'
    frequency: 'PT5M'
    dimensions: []
    query: join([
      'let calls = toscalar(customMetrics | where name == "${metricNames.gatewayDuration}" | summarize sum(valueCount));'
      'customMetrics'
      '| where name == "${metricNames.gatewayErrors}"'
      '| where tostring(customDimensions["status_class"]) != "4xx" or tostring(customDimensions["error.code"]) in ("429", "rate_limit_exceeded")'
      '| summarize errors = sum(valueSum)'
      '| where calls >= ${minimumCalls} and errors * 100.0 / calls > ${gatewayErrorRatePercent}'
    ], '\n')
  }
  {
    // p95 needs every call's duration. OpenTelemetry histograms reach customMetrics as
    // count/sum/min/max per export only, so a percentile of llmops.gateway.duration cannot be
    // computed there; the host's `requests` rows (one per invocation, not sampled: host.json
    // excludes Request) can. This is the latency the client sees, host included.
    name: 'gateway-latency-p95'
    displayName: 'LLMOps: gateway p95 latency'
    description: '95th percentile duration of the chat functions above ${gatewayP95LatencyMs} ms over 15 minutes (requests).'
    severity: 2
    window: 'PT15M'
    frequency: 'PT5M'
    dimensions: []
    query: join([
      'requests'
      '| where name in (${chatFunctions}) or operation_Name in (${chatFunctions})'
      '| summarize calls = count(), p95_ms = percentile(duration, 95)'
      '| where calls >= ${minimumCalls} and p95_ms > ${gatewayP95LatencyMs}'
    ], '\n')
  }
  {
    name: 'request-log-spill'
    displayName: 'LLMOps: request logs spilled to the local spool'
    description: 'Blob Storage failed or fell behind, and request-log records went to the instance\'s spool (llmops.requestlog.spilled). They are replayed when storage is back; an instance that is recycled first loses them.'
    severity: 2
    window: 'PT15M'
    frequency: 'PT5M'
    dimensions: []
    query: join([
      'customMetrics'
      '| where name == "${metricNames.requestLogSpilled}"'
      '| summarize spilled = sum(valueSum)'
      '| where spilled > 0'
    ], '\n')
  }
  {
    name: 'request-log-backlog'
    displayName: 'LLMOps: request-log backlog'
    description: 'More than ${requestLogBacklogThreshold} request-log records wait in an instance\'s buffer and spool (llmops.requestlog.backlog).'
    severity: 2
    window: 'PT15M'
    frequency: 'PT5M'
    dimensions: []
    query: join([
      'customMetrics'
      '| where name == "${metricNames.requestLogBacklog}"'
      '| summarize backlog = max(valueMax) by cloud_RoleInstance'
      '| where backlog > ${requestLogBacklogThreshold}'
    ], '\n')
  }
  {
    name: 'retrain-failure'
    displayName: 'LLMOps: retraining failed'
    description: 'The retraining trigger counted a failure (llmops.retrain.failures), one alert per reason; its run record in retrain-runs says what happened.'
    severity: 1
    window: 'PT1H'
    frequency: 'PT15M'
    dimensions: [
      {
        name: 'reason'
        operator: 'Include'
        values: [
          '*'
        ]
      }
    ]
    query: join([
      'customMetrics'
      '| where name == "${metricNames.retrainFailures}"'
      '| extend reason = tostring(customDimensions["reason"])'
      '| summarize failures = sum(valueSum) by reason'
      '| where failures > 0'
    ], '\n')
  }
]

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${namePrefix}-operators'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'llmops'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'operators-email'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
    webhookReceivers: empty(alertWebhookUrl) ? [] : [
      {
        name: 'operators-webhook'
        serviceUri: alertWebhookUrl
        useCommonAlertSchema: true
      }
    ]
  }
}

resource logAlerts 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for rule in rules: {
  name: '${namePrefix}-${rule.name}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: rule.displayName
    description: rule.description
    severity: rule.severity
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: rule.frequency
    windowSize: rule.window
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: rule.dimensions
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

output actionGroupName string = actionGroup.name
output metricNames object = metricNames
output unalertedMetricNames object = unalertedMetricNames
