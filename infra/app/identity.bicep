// The app's user-assigned identity: storage, Key Vault, Azure OpenAI and Application Insights
// all accept it, so the app holds no key (role assignments: rbac.bicep).
param name string
param location string
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output name string = identity.name
output id string = identity.id
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
