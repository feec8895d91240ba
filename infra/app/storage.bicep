// The app's storage account: the Functions host (AzureWebJobsStorage), the deployment package,
// and the app's own containers. Identity only: shared keys are off, so no connection string
// with a key exists anywhere.
param name string
param location string
param tags object = {}
param deploymentContainerName string
@description('Days after which request logs move to the cool tier.')
param requestLogCoolAfterDays int
@description('Days after which request logs are deleted.')
param requestLogRetentionDays int

// The containers the code uses (llmops/settings.py; tests/unit/test_infra_contract.py checks
// that this list and the code agree).
var containerNames = {
  requestLogs: 'request-logs'
  driftReports: 'drift-reports'
  retrainRequests: 'retrain-requests'
  retrainRuns: 'retrain-runs'
}
// Request-log records live under request-logs/v1/date=.../hour=... (docs/request-log.md).
var requestLogPrefix = '${containerNames.requestLogs}/v1/'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35:No virtual network here: the Flex app and Event Grid reach storage on its public endpoint, with Entra ID only (shared keys off).
  // checkov:skip=CKV_AZURE_59:No virtual network here, so the public endpoint stays on; every request needs an Entra ID token (shared keys off).
  // checkov:skip=CKV_AZURE_206:LRS is enough for request logs, reports and retraining requests; choose ZRS/GRS here if your retention policy asks for it.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource appContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for container in items(containerNames): {
  parent: blobService
  name: container.value
  properties: {
    publicAccess: 'None'
  }
}]

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Request logs: cool after N days, deleted after the retention. The drift monitor reads the
// last reference window (7 days by default), so keep the cool tier later than that.
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'request-logs-cool-then-delete'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                requestLogPrefix
              ]
            }
            actions: {
              baseBlob: {
                // Azure refuses a cool tier that does not come before the delete
                tierToCool: {
                  daysAfterModificationGreaterThan: min(requestLogCoolAfterDays, requestLogRetentionDays - 1)
                }
                delete: {
                  daysAfterModificationGreaterThan: requestLogRetentionDays
                }
              }
            }
          }
        }
      ]
    }
  }
}

output name string = storage.name
output id string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output requestLogContainer string = containerNames.requestLogs
output driftReportContainer string = containerNames.driftReports
output retrainRequestsContainer string = containerNames.retrainRequests
output retrainRunsContainer string = containerNames.retrainRuns
