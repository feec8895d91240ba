// `azd up` stands up the whole LLMOps gateway: a Flex Consumption Function App with a
// user-assigned identity (no keys anywhere), its storage and Event Grid topic, Key Vault for the
// consumer keys, Azure OpenAI (new or existing), Log Analytics + Application Insights, and the
// alert rules on what the app emits. docs/deploy.md explains every parameter.
// The Event Grid subscription of the `retrain_request` function is deployed after the code,
// by the postdeploy hook (infra/hooks/): its webhook needs a key that exists only then.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name: names the resource group and seeds every resource name.')
param environmentName string

@minLength(1)
@description('Region of every resource (Azure OpenAI: see openAiLocation).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the person running azd: gets blob and Azure OpenAI data access for local debugging. Empty: none.')
param principalId string = ''

@description('Resource group name; empty: rg-<environmentName>.')
param resourceGroupName string = ''

// --- Azure OpenAI: create one, or use an existing endpoint ---------------------------------
@description('Endpoint of an existing Azure OpenAI account (https://NAME.openai.azure.com). Empty: a new account with one chat deployment is created.')
param azureOpenAiEndpoint string = ''

@description('Resource id of that existing account: the app identity gets Cognitive Services OpenAI User on it. Empty: assign the role yourself (docs/deploy.md).')
param azureOpenAiResourceId string = ''

@description('api-version the gateway sends to Azure OpenAI.')
param azureOpenAiApiVersion string = '2024-10-21'

@description('Region of a new Azure OpenAI account (model availability differs by region). Empty: location.')
param openAiLocation string = ''

@description('Name of the chat deployment in a new account.')
param chatDeploymentName string = 'gpt-4o-mini'

@description('Model of that deployment.')
param chatModelName string = 'gpt-4o-mini'

@description('Model version of that deployment.')
param chatModelVersion string = '2024-07-18'

@description('Deployment SKU: GlobalStandard, Standard, DataZoneStandard ...')
param chatDeploymentSku string = 'GlobalStandard'

@description('Capacity of that deployment, in thousands of tokens per minute.')
param chatDeploymentCapacity int = 10

// --- Gateway ---------------------------------------------------------------------------
@description('LLMOPS_MODEL_MAP: public=deployment[|fallback...],... Empty with a new account: <chatModelName>=<chatDeploymentName>; with an existing one: pass-through.')
param modelMap string = ''

@description('LLMOPS_FALLBACK_DEPLOYMENTS: deployments tried after every chain.')
param fallbackDeployments string = ''

@secure()
@description('LLMOPS_API_KEYS (team-a=KEY,team-b=sha256:HEX), stored in Key Vault. Empty: no consumer keys (the Functions key still guards the chat routes).')
param consumerApiKeys string = ''

@allowed(['on', 'off'])
@description('LLMOPS_LOG_CONTENT: keep redacted messages and completions in the request log.')
param logContent string = 'on'

@allowed(['mask', 'hash', 'off'])
@description('LLMOPS_REDACT_MODE.')
param redactMode string = 'mask'

@secure()
@description('LLMOPS_REDACT_SALT for redactMode hash, stored in Key Vault.')
param redactSalt string = ''

@allowed([512, 2048, 4096])
@description('Flex Consumption instance memory (MB).')
param instanceMemoryMB int = 2048

@minValue(1)
@maxValue(1000)
@description('Flex Consumption scale-out limit.')
param maximumInstanceCount int = 40

// --- Traces (MLflow) and drift -------------------------------------------------------------
@description('MLFLOW_TRACKING_URI. Empty: tracing off (LLMOPS_TRACING=off; the code\'s default, a local SQLite store, means nothing on Flex).')
param mlflowTrackingUri string = ''

@description('MLFLOW_EXPERIMENT_NAME of the gateway traces (absolute workspace path on Databricks).')
param mlflowExperimentName string = '/Shared/llmops-gateway'

@description('LLMOPS_DRIFT_EXPERIMENT: MLflow experiment of the drift runs.')
param driftExperimentName string = '/Shared/llmops-drift'

@minLength(1)
@description('LLMOPS_DRIFT_SCHEDULE: NCRONTAB (six fields) of the drift timer, one window per period; the timer cannot start without it.')
param driftSchedule string = '0 0 * * * *'

// --- Retraining and the registry (optional: no Databricks workspace is created) -----------------
@description('DATABRICKS_HOST: an existing workspace, e.g. https://adb-123.4.azuredatabricks.net; empty: no retraining jobs.')
param databricksHost string = ''

@description('LLMOPS_RETRAIN_JOB_ID: the Databricks job id a retraining request starts.')
param retrainJobId string = ''

@secure()
@description('DATABRICKS_TOKEN: a Databricks personal access token, stored in the deployed Key Vault. Or use a service principal (the two parameters below).')
param databricksToken string = ''

@description('DATABRICKS_CLIENT_ID: a Databricks service principal\'s OAuth client id (OAuth M2M), instead of a token.')
param databricksClientId string = ''

@secure()
@description('DATABRICKS_CLIENT_SECRET: that service principal\'s OAuth secret, stored in the deployed Key Vault.')
param databricksClientSecret string = ''

@description('LLMOPS_REGISTRY_MODELS: e.g. support-bot=models:/support-bot@champion (the registry of MLFLOW_TRACKING_URI).')
param registryModels string = ''

// --- Request-log lifecycle -------------------------------------------------------------------
@minValue(1)
@description('Request logs move to the cool tier this many days after they were written.')
param requestLogCoolAfterDays int = 30

@minValue(2)
@description('Request logs are deleted this many days after they were written.')
param requestLogRetentionDays int = 90

// --- Monitoring and alerts -------------------------------------------------------------------
@minValue(30)
@description('Log Analytics retention (days).')
param logRetentionDays int = 30

@description('E-mail address of the alert action group. Empty: no e-mail receiver.')
param alertEmail string = ''

@secure()
@description('Webhook the alert action group calls (common alert schema). Empty: none.')
param alertWebhookUrl string = ''

@description('Alert: gateway error rate (server-side failures, % of calls over 15 min).')
param gatewayErrorRatePercent int = 5

@description('Alert: gateway p95 latency (ms over 15 min).')
param gatewayP95LatencyMs int = 30000

@description('Alert: request-log records waiting in buffer + spool.')
param requestLogBacklogThreshold int = 5000

@description('Alert: error rate of a drift window (%).')
param driftErrorRatePercent int = 5

@description('Alert: content-filter rate of a drift window (%).')
param driftContentFilterRatePercent int = 5

@description('Alert: p95 latency of a drift window (ms).')
param driftLatencyP95Ms int = 30000

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var createOpenAi = empty(azureOpenAiEndpoint)
// The package azd uploads for each deployment (Flex Consumption reads it with the identity).
var deploymentContainerName = 'app-package-${take(resourceToken, 7)}'
// Existing Azure OpenAI account: /subscriptions/S/resourceGroups/G/providers/Microsoft.CognitiveServices/accounts/N
var openAiIdParts = split(empty(azureOpenAiResourceId) ? '/subscriptions/${subscription().subscriptionId}/resourceGroups/none/providers/none/none/none' : azureOpenAiResourceId, '/')

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    requestLogCoolAfterDays: requestLogCoolAfterDays
    requestLogRetentionDays: requestLogRetentionDays
  }
}

module events 'app/events.bicep' = {
  name: 'events'
  scope: rg
  params: {
    name: 'evgt-${resourceToken}'
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    appInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
    retentionInDays: logRetentionDays
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
    consumerApiKeys: consumerApiKeys
    redactSalt: redactSalt
    databricksToken: databricksToken
    databricksClientSecret: databricksClientSecret
  }
}

module openAi 'app/openai.bicep' = if (createOpenAi) {
  name: 'openai'
  scope: rg
  params: {
    name: 'oai-${resourceToken}'
    location: !empty(openAiLocation) ? openAiLocation : location
    tags: tags
    deploymentName: chatDeploymentName
    modelName: chatModelName
    modelVersion: chatModelVersion
    sku: chatDeploymentSku
    capacity: chatDeploymentCapacity
  }
}

// After the role assignments: the host's storage, the Key Vault references and telemetry all
// need them at the app's first start (they can still take minutes to propagate).
module functionApp 'app/function-app.bicep' = {
  name: 'function-app'
  scope: rg
  dependsOn: [
    rbac
  ]
  params: {
    name: 'func-${resourceToken}'
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    identityName: identity.outputs.name
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    requestLogContainer: storage.outputs.requestLogContainer
    appInsightsName: monitoring.outputs.appInsightsName
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    openAiEndpoint: createOpenAi ? openAi.outputs.endpoint : azureOpenAiEndpoint
    openAiApiVersion: azureOpenAiApiVersion
    modelMap: !empty(modelMap) || !createOpenAi ? modelMap : '${chatModelName}=${chatDeploymentName}'
    fallbackDeployments: fallbackDeployments
    consumerKeysSecretUri: keyVault.outputs.consumerKeysSecretUri
    redactSaltSecretUri: keyVault.outputs.redactSaltSecretUri
    logContent: logContent
    redactMode: redactMode
    mlflowTrackingUri: mlflowTrackingUri
    mlflowExperimentName: mlflowExperimentName
    driftExperimentName: driftExperimentName
    driftSchedule: driftSchedule
    databricksHost: databricksHost
    retrainJobId: retrainJobId
    databricksTokenSecretUri: keyVault.outputs.databricksTokenSecretUri
    databricksClientId: databricksClientId
    databricksClientSecretUri: keyVault.outputs.databricksClientSecretUri
    registryModels: registryModels
  }
}

// Every role assignment, in one module: this resource group ...
module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    appPrincipalId: identity.outputs.principalId
    userPrincipalId: principalId
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    openAiAccountName: createOpenAi ? openAi.outputs.name : ''
  }
}

// ... and an existing Azure OpenAI account, wherever it lives.
module rbacExistingOpenAi 'app/rbac.bicep' = if (!createOpenAi && !empty(azureOpenAiResourceId)) {
  name: 'rbac-existing-openai'
  scope: resourceGroup(openAiIdParts[2], openAiIdParts[4])
  params: {
    appPrincipalId: identity.outputs.principalId
    userPrincipalId: principalId
    openAiAccountName: last(openAiIdParts)
  }
}

module alerts 'app/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    namePrefix: 'llmops-${resourceToken}'
    location: location
    tags: tags
    appInsightsName: monitoring.outputs.appInsightsName
    alertEmail: alertEmail
    alertWebhookUrl: alertWebhookUrl
    gatewayErrorRatePercent: gatewayErrorRatePercent
    gatewayP95LatencyMs: gatewayP95LatencyMs
    requestLogBacklogThreshold: requestLogBacklogThreshold
    driftErrorRatePercent: driftErrorRatePercent
    driftContentFilterRatePercent: driftContentFilterRatePercent
    driftLatencyP95Ms: driftLatencyP95Ms
  }
}

// azd stores these in the environment (.azure/<env>/.env); the postdeploy hook reads them.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_URL string = functionApp.outputs.url
output GATEWAY_BASE_URL string = '${functionApp.outputs.url}/api'
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_MANAGED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_BLOB_ENDPOINT string = storage.outputs.blobEndpoint
output REQUEST_LOG_CONTAINER string = storage.outputs.requestLogContainer
output DRIFT_REPORT_CONTAINER string = storage.outputs.driftReportContainer
output RETRAIN_REQUESTS_CONTAINER string = storage.outputs.retrainRequestsContainer
output RETRAIN_RUNS_CONTAINER string = storage.outputs.retrainRunsContainer
output AZURE_EVENTGRID_SYSTEM_TOPIC_NAME string = events.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_LOG_ANALYTICS_WORKSPACE_NAME string = monitoring.outputs.logAnalyticsName
output AZURE_APPLICATION_INSIGHTS_NAME string = monitoring.outputs.appInsightsName
output AZURE_OPENAI_ENDPOINT string = createOpenAi ? openAi.outputs.endpoint : azureOpenAiEndpoint
output AZURE_OPENAI_CHAT_DEPLOYMENT string = createOpenAi ? chatDeploymentName : ''
output AZURE_ACTION_GROUP_NAME string = alerts.outputs.actionGroupName
