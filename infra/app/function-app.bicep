// The Function App on Flex Consumption (Python 3.11), with a user-assigned identity and
// identity-only configuration: storage, Key Vault, Azure OpenAI and Application Insights are
// all reached with Entra ID tokens, never keys.
param name string
param planName string
param location string
param tags object = {}
@description('azd deploys the code to the app tagged with this service name (azure.yaml).')
param serviceName string = 'gateway'
param identityName string
param storageAccountName string
param deploymentContainerName string
param requestLogContainer string
param appInsightsName string
param instanceMemoryMB int
param maximumInstanceCount int
param openAiEndpoint string
param openAiApiVersion string
param modelMap string
param fallbackDeployments string
@description('Versionless Key Vault secret URI of LLMOPS_API_KEYS; empty: no consumer keys.')
param consumerKeysSecretUri string
@description('Versionless Key Vault secret URI of LLMOPS_REDACT_SALT; empty: no salt.')
param redactSaltSecretUri string
param logContent string
param redactMode string
param mlflowTrackingUri string
param mlflowExperimentName string
param driftExperimentName string
param driftSchedule string
@description('DATABRICKS_HOST: the workspace the retraining trigger starts jobs in; empty: none.')
param databricksHost string = ''
@description('LLMOPS_RETRAIN_JOB_ID: the Databricks job a retraining request starts.')
param retrainJobId string = ''
@description('Versionless Key Vault secret URI of a Databricks token; empty: none.')
param databricksTokenSecretUri string = ''
@description('DATABRICKS_CLIENT_ID: a Databricks service principal (OAuth M2M); empty: none.')
param databricksClientId string = ''
@description('Versionless Key Vault secret URI of that service principal\'s secret; empty: none.')
param databricksClientSecretUri string = ''
@description('LLMOPS_REGISTRY_MODELS: public models served from MLflow registry aliases.')
param registryModels string = ''

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: identityName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

var tracingOn = !empty(mlflowTrackingUri)

// Every app setting, one line each. The names are the code's (llmops/settings.py) or the
// platform's; tests/unit/test_infra_contract.py checks both directions. An empty value means
// "the code's default" (the README's configuration table): the code treats blank as unset.
// Settings changed in the portal are reset by the next `azd provision`: change them here.
var appSettings = {
  // Functions host and request log: identity-based storage (no connection string, no key).
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.properties.clientId
  AzureWebJobsStorage__accountName: storage.name
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  // HTTP streams (azurefunctions-extensions-http-fastapi) need the worker's init indexing.
  PYTHON_ENABLE_INIT_INDEXING: '1'
  // Application Insights with Entra ID: local auth is off (monitoring.bicep).
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
  // azure-identity's DefaultAzureCredential (Azure OpenAI, Blob Storage, Azure Monitor) signs
  // in with this user-assigned identity; the app has no system-assigned one.
  AZURE_CLIENT_ID: identity.properties.clientId

  // Upstream: Azure OpenAI with the app's identity (no AZURE_OPENAI_API_KEY).
  LLMOPS_UPSTREAM: 'azure'
  AZURE_OPENAI_ENDPOINT: openAiEndpoint
  AZURE_OPENAI_API_VERSION: openAiApiVersion
  LLMOPS_MODEL_MAP: modelMap
  LLMOPS_FALLBACK_DEPLOYMENTS: fallbackDeployments
  LLMOPS_API_KEYS: empty(consumerKeysSecretUri) ? '' : '@Microsoft.KeyVault(SecretUri=${consumerKeysSecretUri})'
  LLMOPS_MAX_BODY_BYTES: ''
  LLMOPS_CONNECT_TIMEOUT_S: ''
  LLMOPS_READ_TIMEOUT_S: ''
  LLMOPS_TOTAL_TIMEOUT_S: ''
  LLMOPS_MAX_RETRIES: ''
  LLMOPS_RETRY_MAX_WAIT_S: ''
  LLMOPS_UPSTREAM_CONNECTIONS: ''

  // Request log (Blob Storage through AzureWebJobsStorage__* above).
  LLMOPS_REQUEST_LOG: 'on'
  LLMOPS_LOG_CONTAINER: requestLogContainer
  LLMOPS_SPOOL_DIR: ''
  LLMOPS_LOG_BATCH_RECORDS: ''
  LLMOPS_LOG_FLUSH_S: ''
  LLMOPS_LOG_BUFFER_RECORDS: ''
  LLMOPS_LOG_UPLOAD_TIMEOUT_S: ''
  LLMOPS_LOG_RETRY_S: ''
  LLMOPS_LOG_CONTENT: logContent
  LLMOPS_LOG_PROCESS: ''
  LLMOPS_REDACT_MODE: redactMode
  LLMOPS_REDACT_SALT: empty(redactSaltSecretUri) ? '' : '@Microsoft.KeyVault(SecretUri=${redactSaltSecretUri})'
  LLMOPS_REDACT_PATTERNS: ''

  // Traces (MLflow). Without a tracking URI they are off: the code's default store is a local
  // SQLite file, which on Flex Consumption would be lost with each instance.
  LLMOPS_TRACING: tracingOn ? 'on' : 'off'
  MLFLOW_TRACKING_URI: mlflowTrackingUri
  MLFLOW_EXPERIMENT_NAME: mlflowExperimentName
  LLMOPS_TRACE_EXPORT: ''
  LLMOPS_TRACE_PROCESS: ''
  LLMOPS_TRACE_SAMPLE: ''
  LLMOPS_TRACE_QUEUE_RECORDS: ''
  LLMOPS_TRACE_FLUSH_TIMEOUT_S: ''
  // Retraining trigger and registry-driven serving: a token, or a Databricks service principal
  // (OAuth M2M), both from the deployed Key Vault. The Python databricks-sdk has no managed
  // identity sign-in (docs/deploy.md).
  DATABRICKS_HOST: databricksHost
  DATABRICKS_TOKEN: empty(databricksTokenSecretUri) ? '' : '@Microsoft.KeyVault(SecretUri=${databricksTokenSecretUri})'
  DATABRICKS_CLIENT_ID: databricksClientId
  DATABRICKS_CLIENT_SECRET: empty(databricksClientSecretUri) ? '' : '@Microsoft.KeyVault(SecretUri=${databricksClientSecretUri})'
  LLMOPS_RETRAIN_JOB_ID: retrainJobId
  LLMOPS_RETRAIN_BLOB_SOURCE: 'EventGrid'
  LLMOPS_RETRAIN_ATTEMPTS: ''
  LLMOPS_RETRAIN_TIMEOUT_S: ''
  LLMOPS_REGISTRY_MODELS: registryModels
  LLMOPS_REGISTRY_TTL_S: ''
  LLMOPS_REGISTRY_TIMEOUT_S: ''

  // Drift monitor. The timer's schedule is `%LLMOPS_DRIFT_SCHEDULE%`: it must not be empty.
  LLMOPS_DRIFT_SCHEDULE: driftSchedule
  LLMOPS_DRIFT_EXPERIMENT: driftExperimentName
  LLMOPS_DRIFT_REFERENCE_HOURS: ''
  LLMOPS_DRIFT_BASELINE: ''
  LLMOPS_DRIFT_SHARE: ''
  LLMOPS_DRIFT_MIN_SAMPLES: ''
  LLMOPS_DRIFT_TESTS: ''
  LLMOPS_DRIFT_TEXT_SAMPLE: ''
  LLMOPS_DRIFT_MAX_ROWS: ''
  LLMOPS_DRIFT_WORKERS: ''
  LLMOPS_DRIFT_SIZE_RULE: ''
  LLMOPS_DRIFT_CATCHUP: ''
  LLMOPS_RETRAIN_AFTER: ''
  LLMOPS_RETRAIN_COOLDOWN: ''
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225:Flex Consumption zone redundancy is region-dependent; set properties.zoneRedundant where the region supports it.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222:The gateway is a public API; callers need the Functions key and a consumer key.
  // checkov:skip=CKV_AZURE_17:Clients are OpenAI SDKs authenticating with keys, not client certificates.
  // checkov:skip=CKV_AZURE_212:Flex Consumption scales from zero by design; add scaleAndConcurrency.alwaysReady when cold starts matter more than cost.
  // checkov:skip=CKV_AZURE_213:Flex Consumption instances come and go with demand, not a fixed pool to evict from; probes call the anonymous /api/health.
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identity.id
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

resource settings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13:App Service Authentication would break OpenAI SDK clients; the Functions key and consumer keys authenticate every call.
  // checkov:skip=CKV_AZURE_63:App Service HTTP logs are a web-app setting (this resource holds app settings); requests go to Application Insights.
  // checkov:skip=CKV_AZURE_65:Detailed error pages are a web-app log setting (this resource holds app settings); errors go to Application Insights.
  // checkov:skip=CKV_AZURE_66:Failed request tracing is a web-app log setting (this resource holds app settings); failures go to Application Insights.
  // checkov:skip=CKV_AZURE_80:A Python app: no .NET Framework version.
  // checkov:skip=CKV_AZURE_88:Flex Consumption has no Azure Files content share; the package is in a blob container.
  // checkov:skip=CKV_AZURE_222:This resource holds app settings; public access is decided on the site, which is a public API by design.
  parent: functionApp
  name: 'appsettings'
  properties: appSettings
}

// azd deploys with Entra ID (OneDeploy); nobody needs basic publishing credentials.
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

output name string = functionApp.name
output url string = 'https://${functionApp.properties.defaultHostName}'
