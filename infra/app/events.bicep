// The storage account's Event Grid system topic. Flex Consumption runs blob triggers only with
// source EventGrid, so `retrain_request` learns of new retraining requests from here. Its
// subscription needs the function's webhook key, which exists only after the code is
// deployed: infra/hooks/retrain-events.bicep adds it from the postdeploy hook.
param name string
param location string
param tags object = {}
param storageAccountName string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: name
  location: location
  tags: tags
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

output name string = topic.name
