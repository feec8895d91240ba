// A new Azure OpenAI account with one chat deployment. Keys are off (disableLocalAuth): the
// gateway calls it with its identity (Cognitive Services OpenAI User, rbac.bicep), which needs
// the custom subdomain.
param name string
param location string
param tags object = {}
param deploymentName string
param modelName string
param modelVersion string
param sku string
param capacity int

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  // checkov:skip=CKV_AZURE_134:No virtual network here: the Flex app calls Azure OpenAI on its public endpoint, with Entra ID only (local auth off).
  name: name
  location: location
  tags: tags
  kind: 'OpenAI'
  identity: {
    type: 'SystemAssigned'
  }
  sku: {
    name: 'S0'
  }
  properties: {
    customSubDomainName: name
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
    }
  }
}

resource chat 'Microsoft.CognitiveServices/accounts/deployments@2024-10-01' = {
  parent: account
  name: deploymentName
  sku: {
    name: sku
    capacity: capacity
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: modelName
      version: modelVersion
    }
    versionUpgradeOption: 'OnceNewDefaultVersionAvailable'
  }
}

output name string = account.name
output endpoint string = account.properties.endpoint
output deploymentName string = chat.name
